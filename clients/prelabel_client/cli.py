"""The ``prelabel`` command.

Client commands (``predict``, ``models``) need only the base install; server-side commands
(``serve``, ``export``, ``train``, ``evaluate``, ``demo``) import their packages lazily and say
which extra to install when it is missing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from prelabel_client.client import PreLabelClient
from prelabel_client.label_studio import DEFAULT_IMAGE_URL, check_image_url
from prelabel_proto.errors import PrelabelError
from prelabel_models.evaluation.cli import register as add_evaluation_commands, whole_number
from prelabel_models.extras import needs_extra

MEASURES = ["entropy", "margin", "least_confidence", "mc_entropy", "mutual_information", "mc_variance",
            "tta_entropy", "tta_disagreement"]
SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "camvid"


@needs_extra("server")
def _train(args: argparse.Namespace) -> int:
    from prelabel_models.training.config import TrainConfig
    from prelabel_models.training.trainer import TrainingRun, train

    config = TrainConfig.load(args.config)
    if args.epochs is not None:
        config.recipe.epochs = args.epochs
    if args.version or args.init:
        config.card.version = args.version or _next_version(args.init)
    run = TrainingRun(config=config, data_root=args.data, out=args.out, run_dir=args.run_dir or args.out.parent / "runs" / args.out.name,
                      init=args.init, resume=args.resume)
    best = train(run)
    if not (args.out / "card.json").is_file():  # resumed into a new --out, and no epoch beat the best
        print(f"no model package in {args.out}: no epoch of this part of the run beat epoch {best['epoch']} "
              f"(val mIoU {best['val_miou']:.4f}), whose package is in the --out the run had then", file=sys.stderr)
        return 1
    print(f"best epoch {best['epoch']}: val mIoU {best['val_miou']:.4f}; model package written to {args.out}")
    return 0


def _next_version(base_package: Path) -> str:
    """A fine-tuned package's version: its base's plus one. Both used to be the config's "1", so
    responses, manifests (and ``predict --resume``) could not tell the two models apart."""
    from prelabel_models.evaluation.cli import UsageError
    from prelabel_models.package import ModelPackage

    version = ModelPackage.open(base_package).card.version
    if not version.isdigit():
        raise UsageError(f"--init {base_package} has version {version!r}, not a whole number: give the new "
                         "package's version with --version")
    return str(int(version) + 1)


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train or fine-tune a model package on an image/label folder")
    parser.add_argument("--config", type=Path, required=True, help="TOML file: [card] template and [recipe]")
    parser.add_argument("--data", type=Path, required=True, help="dataset root with train/ and val/ splits")
    parser.add_argument("--out", type=Path, required=True, help="model package folder to write (best epoch)")
    parser.add_argument("--run-dir", type=Path, help="checkpoint and metrics log folder (default: runs/<name> beside --out)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --run-dir")
    parser.add_argument("--init", type=Path, help="model package to fine-tune instead of starting from scratch")
    parser.add_argument("--epochs", type=whole_number(1), help="override the recipe's epoch count (1 or more)")
    parser.add_argument("--version", help="the new package's version (default: the config's; with --init, the "
                                           "base package's version plus one)")
    parser.set_defaults(handler=_train)



@needs_extra("serve-onnx")
def _serve(args: argparse.Namespace) -> int:
    import logging

    from prelabel_server.grpc_api.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(_server_settings(args))
    return 0


def _server_settings(args: argparse.Namespace):
    from prelabel_server.settings import ServerSettings

    overrides = {name: getattr(args, name) for name in ("host", "port", "model_repository", "backend", "device", "default_model")
                 if getattr(args, name, None) is not None}
    return ServerSettings(**overrides)


def _add_server_options(parser: argparse.ArgumentParser,
                        port_help: str = "port (PRELABEL_PORT, default 50051; 0 = any free port)") -> None:
    parser.add_argument("--host", help="address to listen on (PRELABEL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=whole_number(0, 65535), help=port_help)
    parser.add_argument("--model-repository", type=Path, help="folder of model packages (PRELABEL_MODEL_REPOSITORY)")
    parser.add_argument("--backend", choices=["auto", "torch", "onnx"], help="PRELABEL_BACKEND, default auto")
    parser.add_argument("--device", help="device override, e.g. cpu or cuda:0 (PRELABEL_DEVICE)")
    parser.add_argument("--default-model", help="model used when a request names none (PRELABEL_DEFAULT_MODEL)")


@needs_extra("label-studio")  # the only optional module predict imports, for --label-studio
def _predict(args: argparse.Namespace) -> int:
    from prelabel_client.batch import predict_files

    images = _predict_inputs(args.images, args.images_from, args.out)
    with _connect(args) as client:
        report = predict_files(client, images, args.out, model=args.model, measure=args.measure,
                               uncertainty_threshold=args.uncertainty_threshold, coco=args.coco,
                               label_studio=args.image_url if args.label_studio else None, resume=args.resume,
                               previews=not args.no_previews)
    print(report.describe())
    return 0 if report.failed == 0 else 1


def _predict_inputs(arguments: list[Path], images_from: str | None, out_dir: Path) -> list[Path]:
    """The job's images: the arguments, then the paths listed in ``images_from`` (a file, or - for
    standard input; one a line, relative to the current folder). Each is an image file, or a
    folder whose image files at every depth are taken in path order (``find_images``), but none
    inside ``out_dir``: with --out inside the folder, a second run took the first one's masks and
    overlays as images. A dataset is given as a folder or a list, since the command line holds
    only 20-40 thousand paths, and a job split over several runs into one --out kept the record
    of the last run alone. An argument that is neither an existing folder nor named like an image
    is refused before the job starts; a missing image file fails alone, as ``cp`` goes on past one."""
    from prelabel_models.image_files import IMAGE_SUFFIXES, DatasetError, find_images

    outputs = Path(os.path.abspath(out_dir))
    images: list[Path] = []
    missing = [str(given) for given in arguments if given.suffix.lower() not in IMAGE_SUFFIXES and not given.exists()]
    if missing:
        raise DatasetError(f"no such folder: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} "
                           f"(give folders that exist, or image files ending in {' '.join(sorted(IMAGE_SUFFIXES))})")
    for given in arguments + (_listed_images(images_from) if images_from is not None else []):
        if not given.is_dir():
            images.append(given)  # a listed file that is missing, or no image, fails alone in the manifest
            continue
        found = [image for image in find_images(given) if not Path(os.path.abspath(image)).is_relative_to(outputs)]
        if not found:
            raise DatasetError(f"no images in {given} or the folders below it (files ending in "
                               f"{' '.join(sorted(IMAGE_SUFFIXES))}, outside --out)")
        images += found
    if not images:
        raise DatasetError("no images given: name image files or folders, or list them with --images-from")
    return images


def _listed_images(listing: str) -> list[Path]:
    """The lines of ``listing`` as paths, without the line ends and blanks around them (a list
    written on Windows, or with a byte order mark); bytes that are not UTF-8 are kept, as in argv."""
    data = sys.stdin.buffer.read() if listing == "-" else Path(listing).read_bytes()
    lines = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape").splitlines()
    return [Path(line.strip()) for line in lines if line.strip()]


def _models(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        for info in client.models():
            marker = "*" if info.is_default else " "
            error = info.error.splitlines()[0] if info.error else ""
            error += f"DEGRADED: {info.degradation}" if info.degradation else ""
            print(f"{marker} {info.name:<16} v{info.version:<6} {info.state:<8} {info.architecture}/{info.encoder} "
                  f"on {info.backend or '-'} ({info.device or '-'}), {len(info.classes)} classes {error}")
    return 0


def _health(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _demo_images(folder: Path) -> list[Path]:
    images = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not images:
        raise FileNotFoundError(f"no PNG images in {folder}: pass --images a folder that holds some")
    return images


def _select(args: argparse.Namespace) -> int:
    from prelabel_client.selection import check_outputs, rank_pool, write_report, write_selection

    images = _pool_images(args.pool)
    report = args.report or args.out.with_suffix(".html")
    check_outputs(args.out, report, images)
    with _connect(args) as client:
        selection = rank_pool(client, images, args.budget, args.strategy, score=args.score, measure=args.measure,
                              model=args.model, seed=args.seed)
        report.unlink(missing_ok=True)  # an earlier run's report must not stand beside this run's list
        write_selection(selection, args.out)
        write_report(client, selection, report)
    print(f"chose {len(selection.selected)} of {len(selection.ranked)} images ({args.strategy}); "
          f"list: {args.out.resolve()}; report: {report.resolve()}")
    for name, error in selection.failed.items():
        print(f"FAILED {name}: {error}")
    return 0 if not selection.failed else 1


def _pool_images(pool: Path) -> list[Path]:
    """The image files directly inside ``pool``; what else is there is named, not skipped silently."""
    from prelabel_models.image_files import IMAGE_SUFFIXES, DatasetError, list_images

    if not pool.is_dir():
        raise DatasetError(f"the pool {pool} is not a folder: give the folder that holds the unlabelled images")
    images = list_images(pool)
    suffixes = " ".join(sorted(IMAGE_SUFFIXES))
    if not images:
        raise DatasetError(f"no images in {pool}: select ranks the files ending in {suffixes} directly inside it")
    others = sorted(entry.name for entry in set(pool.iterdir()) - set(images))
    if others:
        print(f"ignoring {len(others)} entries of {pool} that are folders or not image files ({suffixes}): "
              f"{', '.join(others[:5])}{', ...' if len(others) > 5 else ''}", file=sys.stderr)
    return images


def _reload(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        info, previous = client.reload_model(args.name)
    change = f"version {previous} -> {info.version}" if previous else f"loaded version {info.version}"
    print(f"{info.name}: {change} ({info.state} on {info.backend}, {info.device})")
    return 0


@needs_extra("server")
def _export(args: argparse.Namespace) -> int:
    from prelabel_models.export import export_and_check

    report = export_and_check(args.package, args.check_images)
    print(f"wrote {args.package / 'model.onnx'}")
    print(report)
    return 0 if report.passed else 1


@needs_extra("serve-onnx")
def _demo(args: argparse.Namespace) -> int:
    from prelabel_client.batch import predict_files
    from prelabel_server.grpc_api.server import start_server

    images = _demo_images(args.images)  # before the server starts: an empty or missing folder is the user's to fix
    settings = _server_settings(args)
    if args.port is None:  # any free port, unless one was asked for
        settings = settings.model_copy(update={"port": 0})
    running = start_server(settings)
    try:
        print(f"serving {running.engine.registry.default_name!r} on {running.address}")
        with PreLabelClient(running.address) as client:
            info = client.model()
            if info.state != "ready":
                print(f"prelabel: default model {info.name!r} is {info.state}: {info.error}", file=sys.stderr)
                return 1
            print(f"model {info.name} v{info.version} ({info.architecture}/{info.encoder}) on {info.backend} ({info.device})")
            report = predict_files(client, images, args.out, coco=True)
    finally:
        running.stop(grace=1)
    print(report.describe())
    return 0 if report.failed == 0 else 1


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", type=_server_address, default=os.environ.get("PRELABEL_SERVER", "127.0.0.1:50051"),
                        help="host:port of the server (PRELABEL_SERVER, default 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=_seconds, default=120.0,
                        help="deadline per call, and the longest wait for a stream's next result, seconds (more than 0)")
    parser.add_argument("--token", default=os.environ.get("PRELABEL_TOKEN"), help="bearer token (PRELABEL_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="speak TLS, trusting the system's root certificates")
    parser.add_argument("--root-certificates", type=Path, metavar="PEM",
                        help="speak TLS, trusting these PEM root certificates (e.g. a self-signed server's own)")
    parser.add_argument("--max-message-bytes", type=whole_number(1024, 2**31 - 1),  # the server's own bounds
                        default=os.environ.get("PRELABEL_MAX_MESSAGE_BYTES", str(64 * 1024 * 1024)),
                        help="largest message, as the server's PRELABEL_MAX_MESSAGE_BYTES (read from there by "
                             "default): an image over it is reported alone instead of failing the whole job")


def _connect(args: argparse.Namespace) -> PreLabelClient:
    roots = args.root_certificates.read_bytes() if args.root_certificates else None
    return PreLabelClient(args.server, timeout=args.timeout, token=args.token, tls=args.tls, root_certificates=roots,
                          max_message_bytes=args.max_message_bytes, stream_idle_timeout=args.timeout)


def _server_address(text: str) -> str:
    """HOST:PORT (or any gRPC target, such as unix:PATH): checked here, since gRPC takes port 99999
    as 34463 and an empty target as an internal error."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give the server as HOST:PORT, e.g. 127.0.0.1:50051")
    host, colon, port = text.rpartition(":")
    if not (colon and port.isdigit()):  # another form of gRPC target: gRPC checks it
        return text
    if not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} of {text!r} is not 1 to 65535")
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} names no host: give HOST:PORT, e.g. 127.0.0.1:{port}")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < 1e9:  # also refuses nan and inf, which gRPC takes as an instant deadline
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than 1e9 seconds, got {text}")
    return value


def _open_unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than 1, got {text}")
    return value


def _image_url(text: str) -> str:
    try:
        check_image_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve every model package of a model repository over gRPC")
    _add_server_options(serve)
    serve.set_defaults(handler=_serve)

    predict = commands.add_parser("predict", help="pre-annotate images through a running server")
    predict.add_argument("images", nargs="*", type=Path,
                         help="image files, or folders whose images (at every depth) are all taken")
    predict.add_argument("--images-from", metavar="LIST",
                         help="also take the image paths listed in this file, one a line (- for standard input): "
                              "for datasets too large for the command line")
    predict.add_argument("--out", type=Path, required=True, help="folder for masks, overlays, heat maps, summaries")
    predict.add_argument("--model", default="", help="model name (default: the server's default model)")
    predict.add_argument("--measure", default="entropy", choices=MEASURES, help="uncertainty measure (default entropy)")
    predict.add_argument("--uncertainty-threshold", type=_open_unit_interval,
                         help="uncertainty above which a pixel counts as uncertain in the summary's "
                              "uncertain_fraction (between 0 and 1; default the server's, 0.5: too high for "
                              "mutual_information and mc_variance, whose values stay small)")
    predict.add_argument("--coco", action="store_true",
                         help="also write OUT/coco.json: per-class masks as COCO RLE (CVAT, pycocotools, datumaro)")
    predict.add_argument("--label-studio", action="store_true",
                         help="also write OUT/label_studio.json (tasks with brush-mask predictions) and "
                              "OUT/label_studio_config.xml (the labelling interface they need)")
    predict.add_argument("--image-url", type=_image_url, default=DEFAULT_IMAGE_URL,
                         help="with --label-studio, where Label Studio loads each image: {path} becomes its path "
                              "relative to the images' common folder, {root} that folder's name (default "
                              "%(default)s: Label Studio's local files, its document root the folder's parent)")
    predict.add_argument("--no-previews", action="store_true",
                         help="write no overlay or heat map, only the mask and the summary (with --coco or "
                              "--label-studio their files too): for large jobs, where they take most of the disk "
                              "and of this client's CPU")
    predict.add_argument("--resume", action="store_true",
                         help="continue a job cut short in --out: keep the images its manifest lists as written")
    _add_client_options(predict)
    predict.set_defaults(handler=_predict)

    models = commands.add_parser("models", help="list the server's models")
    _add_client_options(models)
    models.set_defaults(handler=_models)

    health = commands.add_parser("health", help="the server's (or one model's) gRPC health: exit 0 when SERVING")
    health.add_argument("--service", default="", help="health service name: '' (the server, default) or models/NAME")
    _add_client_options(health)
    health.set_defaults(handler=_health)

    select = commands.add_parser("select", help="rank a folder of unlabelled images and pick the next K to label")
    select.add_argument("pool", type=Path, help="folder of unlabelled images")
    select.add_argument("--budget", type=whole_number(0), required=True, help="how many images to pick")
    select.add_argument("--strategy", default="diverse", choices=["uncertainty", "diverse", "random"],
                        help="uncertainty: the K highest scores; diverse: uncertain and varied (k-center over "
                             "embeddings); random: the baseline (default diverse)")
    select.add_argument("--score", default="top_fraction", choices=["mean", "top_fraction", "class_balanced"],
                        help="image score from the pixel uncertainty (default top_fraction: mean of the 5%% most uncertain)")
    select.add_argument("--measure", default="entropy", choices=MEASURES, help="pixel uncertainty (default entropy)")
    select.add_argument("--model", default="", help="model name (default: the server's default)")
    select.add_argument("--seed", type=whole_number(0), default=0, help="seed for the random strategy (0 or more)")
    select.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    select.add_argument("--report", type=Path, help="HTML report (default: --out with .html)")
    _add_client_options(select)
    select.set_defaults(handler=_select)

    reload = commands.add_parser("reload", help="load a model package again and swap it in (new version)")
    reload.add_argument("name", help="model name")
    _add_client_options(reload)
    reload.set_defaults(handler=_reload)

    export = commands.add_parser("export", help="write a package's ONNX file and check it against PyTorch")
    export.add_argument("package", type=Path, help="model package folder")
    export.add_argument("--check-images", type=Path, default=SAMPLES, help="real images to compare both backends on")
    export.set_defaults(handler=_export)

    demo = commands.add_parser("demo", help="serve the default model on a free port and pre-annotate the sample images")
    demo.add_argument("--images", type=Path, default=SAMPLES, help="folder of PNG images")
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    _add_server_options(demo, port_help="port (default: any free port; PRELABEL_PORT is not used)")
    demo.set_defaults(handler=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prelabel", description=__doc__.splitlines()[0].replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    _add_commands(commands)
    _add_train(commands)
    add_evaluation_commands(commands)
    return parser


def _usage_error_types() -> tuple[type[Exception], ...]:
    """The errors that mean "fix your input", from the modules this install has: a client-only
    install lacks pydantic, which the package and config modules need."""
    found: list[type[Exception]] = [OSError]
    for module, name in (("prelabel_models.evaluation.cli", "UsageError"),
                         ("prelabel_models.image_files", "DatasetError"),
                         ("prelabel_models.package", "ModelPackageError"),
                         ("prelabel_models.backends", "DeviceUnavailable"),
                         ("prelabel_client.label_studio", "LabelStudioError"),
                         ("prelabel_models.training.config", "ConfigError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(found)


def _usage_error(exc: Exception) -> str | None:
    """What to tell the user, in one line, when the command's input or settings cannot be used (a
    package without a card, a folder that does not exist, a setting out of range, a busy port);
    None for anything else, which keeps its traceback."""
    if isinstance(exc, _usage_error_types()):
        return str(exc)
    if type(exc).__name__ != "ValidationError" or not hasattr(exc, "errors"):
        return None
    if getattr(exc, "title", "") == "ServerSettings":  # pydantic, on the PRELABEL_* environment
        return "; ".join(f"PRELABEL_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']} (got {error['input']!r})"
                         if error["loc"] else error["msg"].removeprefix("Value error, ") for error in exc.errors())
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    _printable_output()
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()  # where Python lets handlers be set
    previous_handler = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None  # `serve` sets its own
    try:
        return args.handler(args)
    except PrelabelError as exc:  # the server's answer, said plainly: no traceback
        print(f"prelabel: {exc.describe()}", *getattr(exc, "__notes__", ()), sep="\n", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"prelabel {args.command}: {'terminated' if terminated else 'interrupted'}",
              *getattr(exc, "__notes__", ()), sep="\n", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as exc:
        message = _usage_error(exc)
        if message is None:
            raise
        print(f"prelabel {args.command}: {message}", file=sys.stderr)
        return 2
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what timeout, systemd, Kubernetes and Slurm send) ends a command as Ctrl-C does: a
    batch job lists every image it did not process in its manifest before it exits (status 143)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _printable_output() -> None:
    """File names that are not valid UTF-8 reach the summary as surrogates, which a UTF-8 terminal
    cannot encode: print them escaped instead of failing at the end of a job that succeeded."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
