"""Model packages for prelabel: cards, networks, inference backends, export, training, evaluation.

Heavy dependencies (torch, segmentation-models-pytorch, onnxruntime, even pydantic) are imported
only by the modules that need them, so that an ONNX-only deployment never imports torch and the
base (client) install can import sub-modules such as the CLI registrations.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassInfo": "prelabel_models.card",
    "ModelCard": "prelabel_models.card",
    "Normalization": "prelabel_models.card",
    "ModelPackage": "prelabel_models.package",
    "ModelPackageError": "prelabel_models.package",
    "find_packages": "prelabel_models.package",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prelabel_models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
