"""The ``prelabel`` command.

Client commands (``predict``, ``models``) need only the base install; server-side commands
(``serve``, ``export``, ``train``, ``evaluate``, ``demo``) import their packages lazily and say
which extra to install when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _needs(extra: str) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] in {"torch", "segmentation_models_pytorch", "onnxruntime", "albumentations", "onnx", "pydantic_settings"}:
                    print(f"prelabel: this command needs {exc.name}: pip install 'prelabel[{extra}]'", file=sys.stderr)
                    return 2
                raise
        return run
    return wrap


@_needs("server")
def _train(args: argparse.Namespace) -> int:
    from prelabel_models.training.config import TrainConfig
    from prelabel_models.training.trainer import TrainingRun, train

    config = TrainConfig.load(args.config)
    if args.epochs is not None:
        config.recipe.epochs = args.epochs
    run = TrainingRun(config=config, data_root=args.data, out=args.out, run_dir=args.run_dir or args.out.parent / "runs" / args.out.name,
                      init=args.init, resume=args.resume)
    best = train(run)
    print(f"best epoch {best['epoch']}: val mIoU {best['val_miou']:.4f}; model package written to {args.out}")
    return 0


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train or fine-tune a model package on an image/label folder")
    parser.add_argument("--config", type=Path, required=True, help="TOML file: [card] template and [recipe]")
    parser.add_argument("--data", type=Path, required=True, help="dataset root with train/ and val/ splits")
    parser.add_argument("--out", type=Path, required=True, help="model package folder to write (best epoch)")
    parser.add_argument("--run-dir", type=Path, help="checkpoint and metrics log folder (default: runs/<name> beside --out)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --run-dir")
    parser.add_argument("--init", type=Path, help="model package to fine-tune instead of starting from scratch")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.set_defaults(handler=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prelabel", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
