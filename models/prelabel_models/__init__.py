"""Model packages for prelabel: cards, networks, inference backends, export, training, evaluation.

Heavy dependencies (torch, segmentation-models-pytorch, onnxruntime) are imported lazily by the
modules that need them, so that an ONNX-only deployment never imports torch.
"""

from prelabel_models.card import ClassInfo, ModelCard, Normalization
from prelabel_models.package import ModelPackage, ModelPackageError, find_packages

__all__ = ["ClassInfo", "ModelCard", "ModelPackage", "ModelPackageError", "Normalization", "find_packages"]
