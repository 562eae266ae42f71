"""What a model on an accelerator does when the accelerator fails: retry in smaller batches, then
run the request on ONNX Runtime on the CPU, and say so.

A GPU that runs out of memory on a batch of 8 often manages two batches of 4; one that fails even
on a single image (memory held by another process, a wedged device) must not fail the request when
the CPU can still answer it. Every fallback is reported through ``on_degraded`` (the registry turns
it into the model's ``degradation``, its ``models/<name>/device`` health status and metrics), and
the first call the accelerator completes again clears it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable

import numpy as np

from prelabel_models.backends import Backend, release_idle_memory, stack_inputs
from prelabel_models.package import ModelPackageError
from prelabel_models.postprocessing import MapRequest, SegmentationMaps
from prelabel_proto.errors import ResourceExhausted

log = logging.getLogger(__name__)

_DEVICE_ERROR_MARKERS = ("CUDA", "CUBLAS", "CUDNN", "out of memory", "Failed to allocate memory")


def is_device_failure(exc: BaseException) -> bool:
    """Accelerator failures (out of memory, CUDA runtime errors), as opposed to bad input or bugs."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    from_runtime = type(exc).__module__.startswith(("torch", "onnxruntime")) or type(exc) is RuntimeError
    text = str(exc)
    return from_runtime and any(marker.lower() in text.lower() for marker in _DEVICE_ERROR_MARKERS)


class DeviceFallback:
    """A Backend that runs ``primary`` (on an accelerator) and falls back to ``make_fallback()``."""

    def __init__(self, primary: Backend, make_fallback: Callable[[], Backend],
                 on_degraded: Callable[[str], None], on_recovered: Callable[[], None]) -> None:
        self.primary = primary
        self._make_fallback = make_fallback
        self._fallback: Backend | None = None
        self._on_degraded = on_degraded
        self._on_recovered = on_recovered
        self._lock = threading.Lock()
        self.degradation = ""

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def device(self) -> str:
        return self.primary.device

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._call("run", batch)

    def run_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._call("run_with_embedding", batch)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return self._call("features", batch)

    def head(self, features: np.ndarray, dropout_mask: np.ndarray) -> np.ndarray:
        # The masks carry the sample axis (features broadcast against them): split those.
        return self._call("head", dropout_mask, lambda masks: (features, masks))

    @property
    def maps_on_device(self) -> bool:
        return getattr(self.primary, "maps_on_device", False)

    def release_idle_memory(self) -> None:
        for backend in (self.primary, self._fallback):
            if backend is not None:
                release_idle_memory(backend)

    def stack_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        return stack_inputs(self.primary, inputs)

    def run_maps(self, batch: np.ndarray, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
        # Split image numbers, so that each half keeps its own images' requests. The halves are
        # runs of rows: a slice is a view, where indexing with the numbers copied the whole batch
        # (66 MB for 32 CamVid frames, a sixth of the batcher's time on an H100) before every pass.
        return self._call("run_maps", np.arange(len(batch)),
                          lambda rows: (batch[rows[0]: rows[-1] + 1], temperature, [requests[row] for row in rows]))

    def _call(self, method: str, batch: np.ndarray,
              arguments: Callable[[np.ndarray], tuple[np.ndarray, ...]] = lambda batch: (batch,)):
        failure = ""
        try:
            result = getattr(self.primary, method)(*arguments(batch))
        except Exception as exc:
            if not is_device_failure(exc):
                raise
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if not failure:
            self._recovered()
            return result
        # Retried only here, after the except block: until it ends, the error's traceback keeps the
        # failed forward pass's frames, and the device memory their tensors hold, alive (a real
        # H100 then had no room even for one image; tests/server/test_cuda.py).
        release = getattr(self.primary, "release_cached_memory", None)
        if release is not None:
            release()
        return self._after_failure(method, batch, arguments, failure)

    def _after_failure(self, method: str, batch: np.ndarray, arguments: Callable, failure: str):
        """Two halves on the accelerator again; a single image that failed goes to the CPU."""
        if len(batch) > 1:
            half = len(batch) // 2
            log.warning("%s on %s failed for a batch of %d (%s): retrying as %d + %d", method, self.device,
                        len(batch), failure, half, len(batch) - half)
            return _concatenate([self._call(method, batch[:half], arguments), self._call(method, batch[half:], arguments)])
        fallback = self._fallback_backend(failure)
        self._degraded(f"{failure} on {self.device} even for a single image: running on ONNX Runtime on the CPU "
                       "until the device recovers")
        return getattr(fallback, method)(*arguments(batch))

    def _fallback_backend(self, failure: str) -> Backend:
        with self._lock:
            if self._fallback is None:
                try:
                    self._fallback = self._make_fallback()
                except ModelPackageError as exc:
                    raise ResourceExhausted(f"{failure} on {self.device} even for a single image, and there is no "
                                            f"CPU fallback: {exc}") from None
            return self._fallback

    def _degraded(self, reason: str) -> None:
        with self._lock:
            changed, self.degradation = self.degradation != reason, reason
        if changed:
            log.error("model degraded: %s", reason)
        self._on_degraded(reason)  # every time: the registry counts fallbacks

    def _recovered(self) -> None:
        with self._lock:
            was_degraded, self.degradation = bool(self.degradation), ""
        if was_degraded:
            log.warning("model back on %s", self.device)
            self._on_recovered()


def _concatenate(parts: list):
    """Joins the halves' outputs: arrays, lists (of maps), or tuples of arrays (logits and embeddings)."""
    if isinstance(parts[0], list):
        return [item for part in parts for item in part]
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(items) for items in zip(*parts))
    return np.concatenate(parts)
