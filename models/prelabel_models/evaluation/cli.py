"""The ``prelabel evaluate`` and ``prelabel calibrate`` subcommands.

Only argparse is imported here: the ``prelabel`` parser is built by the client, whose base install
has none of numpy's heavier friends; the work is imported when a command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from prelabel_models.extras import needs_extra

_BACKEND_HELP = "inference backend: torch, onnx (needs `prelabel export PKG` first) or auto (default: %(default)s)"


class UsageError(ValueError):
    """A command-line value names nothing that exists (a backend, a measure)."""


def register(commands: argparse._SubParsersAction) -> None:
    """Adds ``evaluate`` and ``calibrate`` to the ``prelabel`` subcommands."""
    _add_evaluate(commands)
    _add_calibrate(commands)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", type=Path, metavar="PKG", help="model package folder (holds card.json)")
    parser.add_argument("--data", type=Path, required=True, help="dataset root, e.g. ../shared/data/camvid")
    parser.add_argument("--split", default="val", help="split folder under --data (default: %(default)s)")
    parser.add_argument("--backend", default="torch", help=_BACKEND_HELP)
    parser.add_argument("--threads", type=whole_number(1), help="CPU threads for the backend (default: the backend's own)")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate", help="score masks and uncertainty of a model package on a labelled split",
        description="Runs every image of the split through the server's inference path and writes "
                    "metrics.json plus reliability, review-curve and per-class IoU plots.")
    _add_common(parser)
    parser.add_argument("--out", type=Path, help="folder for metrics.json and plots "
                                                 "(default: runs/evaluate/<model>-<split>-<backend>)")
    parser.add_argument("--measures", nargs="+", metavar="NAME",
                        help="uncertainty measures to score (default: all of entropy, margin, least_confidence)")
    parser.set_defaults(handler=_server_command(_evaluate))


def _add_calibrate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "calibrate", help="fit the softmax temperature on a labelled split and store it in the card",
        description="Fits one temperature by minimum NLL on a seeded random sample of labelled pixels, "
                    "writes it into PKG/card.json and prints NLL and ECE before and after.")
    _add_common(parser)
    parser.add_argument("--max-pixels", type=whole_number(1), default=1_000_000,
                        help="pixels sampled for the fit, spread evenly over images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.set_defaults(handler=_server_command(_calibrate))


def _evaluate(args: argparse.Namespace) -> int:
    from prelabel_models.evaluation.evaluate import evaluate
    from prelabel_models.evaluation.plots import write_plots
    from prelabel_models.evaluation.report import print_report, write_json
    from prelabel_models.uncertainty import UNCERTAINTY_MEASURES

    _check_backend(args.backend)
    measures = args.measures or list(UNCERTAINTY_MEASURES)
    unknown = sorted(set(measures) - set(UNCERTAINTY_MEASURES))
    if unknown:
        raise UsageError(f"unknown uncertainty measures {unknown}; choose from {sorted(UNCERTAINTY_MEASURES)}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():  # found now, not after the split
        raise UsageError(f"--out {args.out} is a file: metrics.json and the plots are written into a folder")
    evaluation = evaluate(args.package, args.data, args.split, args.backend, measures, args.threads)
    out = args.out or Path("runs") / "evaluate" / f"{evaluation.model}-{args.split}-{evaluation.backend}"
    written = [write_json(evaluation, out), *write_plots(evaluation, out)]
    print_report(evaluation)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from prelabel_models.evaluation.calibration import calibrate

    _check_backend(args.backend)
    result = calibrate(args.package, args.data, args.split, args.backend, args.max_pixels, args.seed, args.threads)
    print(f"temperature {result.temperature:.4f} (was {result.previous_temperature:g}) fitted on "
          f"{result.pixels} pixels of {result.images} {result.split} images")
    print(f"NLL {result.nll_before:.4f} -> {result.nll_after:.4f}   "
          f"ECE {100 * result.ece_before:.2f} % -> {100 * result.ece_after:.2f} %   (T=1 -> T={result.temperature:.4f})")
    print(f"wrote {Path(args.package) / 'card.json'}")
    return 0


def _check_backend(name: str) -> None:
    from prelabel_models.backends import resolve_backend_name

    try:
        resolve_backend_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum`` (and at most ``maximum``); anything
    else is refused with a message that says what is expected (argparse's own names the parsing
    function)."""
    expected = f"{minimum} or more" if maximum is None else f"{minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {value}")
        return value

    return parse


def _server_command(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command that needs the server-side packages; an unusable input (UsageError, DatasetError,
    a broken package) becomes a one-line message in ``prelabel_client.cli.main``, as for every command."""
    return needs_extra("server")(handler)
