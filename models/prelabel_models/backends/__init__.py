"""Inference backends, looked up by name. Each is imported only when asked for, so that choosing
``onnx`` never imports torch."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from prelabel_models.package import ModelPackage

_BACKENDS = {
    "torch": "prelabel_models.backends.torch_backend:TorchBackend",
    "onnx": "prelabel_models.backends.onnx_backend:OnnxBackend",
}
BACKEND_NAMES = ("auto", *_BACKENDS)


class Backend(Protocol):
    """Runs the network: normalised images (N, C, H, W) float32 → logits (N, classes, H, W) float32.

    A backend on an accelerator may also turn the logits into maps there: it then has
    ``maps_on_device = True`` and ``run_maps(batch, temperature, requests) -> list[SegmentationMaps]``
    (see device_maps). Without them, the caller derives the maps from ``run``'s logits on the host.
    It may also stack batches itself (``stack_inputs``, see the function of that name), and give
    back memory it keeps after an unusually large run (``release_idle_memory``, same name).
    """

    name: str
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def run_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and image embeddings (N, D) from one forward pass."""

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Images → decoder features (N, F, h, w): the deterministic part, run once for MC dropout."""

    def head(self, features: np.ndarray, dropout_mask: np.ndarray) -> np.ndarray:
        """Features x explicit dropout mask → logits (N, classes, H, W)."""


def stack_inputs(backend: Backend, inputs: list[np.ndarray]) -> np.ndarray:
    """Model inputs of one shape as one batch, in memory the backend chooses where it has a
    ``stack_inputs`` of its own (page-locked on a GPU), else in a plain numpy array."""
    own = getattr(backend, "stack_inputs", None)
    return own(inputs) if own is not None else np.stack(inputs)


def release_idle_memory(backend: Backend) -> None:
    """Lets a backend that keeps its largest run's memory for the next (ONNX Runtime's arena) give
    it back; called after the runs a tiled image or many MC-dropout samples take, which need far
    more than the batches a server runs all day. A no-op for backends without such a cache."""
    release = getattr(backend, "release_idle_memory", None)
    if release is not None:
        release()


def gpu_visible() -> bool:
    """Whether a CUDA device is visible, decided without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidiactl").exists() and importlib.util.find_spec("torch") is not None


def resolve_backend_name(name: str) -> str:
    """``auto`` is torch on a GPU, ONNX Runtime on the CPU."""
    if name == "auto":
        return "torch" if gpu_visible() else "onnx"
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {list(BACKEND_NAMES)}")
    return name


class DeviceUnavailable(ValueError):
    """The device asked for is not on this machine: a server-wide setting to fix, not one model
    package's fault (so ``serve`` exits instead of listing every package as failed)."""


def check_device(name: str, device: str) -> None:
    """Raises DeviceUnavailable if backend ``name`` cannot run on ``device`` here; loads no model."""
    if device:
        module_name, class_name = _BACKENDS[resolve_backend_name(name)].split(":")
        getattr(importlib.import_module(module_name), class_name).check_device(device)


def create_backend(name: str, package: ModelPackage, device: str | None = None, **options: object) -> Backend:
    """Loads ``package`` on backend ``name`` (``auto``, ``torch`` or ``onnx``)."""
    module_name, class_name = _BACKENDS[resolve_backend_name(name)].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(package, device=device, **options)
