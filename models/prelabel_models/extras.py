"""Which optional dependencies belong to which install extra, and the one place a command that
hits a missing one is turned into a message saying what to install. Standard library only: the
base (client) install imports it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

ArgsT = TypeVar("ArgsT")

OPTIONAL_MODULES = frozenset({
    "torch", "segmentation_models_pytorch", "onnxruntime", "onnx", "albumentations", "safetensors", "sklearn",
    "scipy", "matplotlib", "rich", "pydantic", "pydantic_settings", "grpc_health", "grpc_reflection",
    "prometheus_client", "torchmetrics", "label_studio_converter",
})


def needs_extra(extra: str) -> Callable[[Callable[[ArgsT], int]], Callable[[ArgsT], int]]:
    """Runs a command; if one of OPTIONAL_MODULES is missing, says `pip install 'prelabel[extra]'` and
    returns exit code 2 instead of a traceback."""
    def wrap(handler: Callable[[ArgsT], int]) -> Callable[[ArgsT], int]:
        def run(args: ArgsT) -> int:
            try:
                return handler(args)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.split(".")[0] in OPTIONAL_MODULES:
                    print(f"prelabel: this command needs {exc.name}: pip install 'prelabel[{extra}]'", file=sys.stderr)
                    return 2
                raise
        return run
    return wrap
