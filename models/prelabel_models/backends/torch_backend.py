"""PyTorch backend: CUDA when available (optionally fp16 autocast), CPU otherwise."""

from __future__ import annotations

import numpy as np
import torch

from prelabel_models.backends import DeviceUnavailable
from prelabel_models.backends.cuda_graphs import GraphedForward
from prelabel_models.backends.device_maps import batch_maps
from prelabel_models.network import load_network
from prelabel_models.package import ModelPackage, ModelPackageError
from prelabel_models.postprocessing import MapRequest, SegmentationMaps


class TorchBackend:
    name = "torch"

    def __init__(self, package: ModelPackage, device: str | None = None, fp16: bool = False, threads: int | None = None,
                 cuda_graphs: bool = False) -> None:
        if not package.weights_path.is_file():
            raise ModelPackageError(f"weights file {package.weights_path} is missing")
        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.check_device(device)
        if threads and not device.startswith("cuda"):
            torch.set_num_threads(threads)
        self.device = str(torch.device(device))
        self.fp16 = fp16 and self.device.startswith("cuda")
        self.weights_digest = package.weights_digest()  # what its CPU fallback's graphs must come from
        network = load_network(package.card, package.weights_path)
        self.network = network.to(self.device, memory_format=torch.channels_last)
        self._forward = GraphedForward(self._eager_forward, self.device) if cuda_graphs and self.on_gpu else self._eager_forward

    @staticmethod
    def check_device(device: str) -> None:
        if not device.startswith("cuda"):
            return
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {device!r} asked for, but torch sees no CUDA device: use cpu, or leave "
                                    "the device empty for the backend's choice")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                                    f"device(s): use cuda:0 to cuda:{torch.cuda.device_count() - 1}")

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @torch.inference_mode()
    def run_with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self._to_device(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            logits, embedding = self.network.logits_and_embedding(images)
        return _to_host(logits), _to_host(embedding)

    @torch.inference_mode()
    def features(self, batch: np.ndarray) -> np.ndarray:
        images = self._to_device(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            return _to_host(self.network.features(images))

    @torch.inference_mode()
    def head(self, features: np.ndarray, dropout_mask: np.ndarray) -> np.ndarray:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            logits = self.network.masked_head(torch.from_numpy(features).to(self.device),
                                              torch.from_numpy(dropout_mask).to(self.device))
        return _to_host(logits)

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)

    def stack_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        """On a GPU the batch is stacked straight into page-locked memory from torch's caching host
        allocator, which the GPU reads at full bus speed, in one torch call. A fresh numpy array of
        66 MB (32 CamVid frames) page-faulted on every batch and went to the GPU through a staging
        copy; and ``np.stack`` into page-locked memory still took a third of the batcher's thread
        on an H100, as each image's copy gives up the GIL and must win it back from the request
        threads (docs/benchmarks.md)."""
        if not self.on_gpu:
            return np.stack(inputs)
        pinned = torch.empty((len(inputs), *inputs[0].shape), dtype=torch.float32, pin_memory=True)
        torch.stack([torch.from_numpy(image) for image in inputs], out=pinned)
        return pinned.numpy()  # the array keeps the pinned block alive

    def release_cached_memory(self) -> None:
        """After a CUDA out-of-memory error: hand the allocator's cached blocks back before a retry."""
        if self.on_gpu:
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        return _to_host(self._logits(batch))

    @property
    def maps_on_device(self) -> bool:
        """On a GPU the maps are computed there (``run_maps``): see device_maps for why."""
        return self.on_gpu

    @torch.inference_mode()
    def run_maps(self, batch: np.ndarray, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
        return batch_maps(self._logits(batch), temperature, requests)

    def _logits(self, batch: np.ndarray) -> torch.Tensor:
        return self._forward(self._to_device(batch))

    def _eager_forward(self, images: torch.Tensor) -> torch.Tensor:
        # no autocast cache: a CUDA graph must not keep casts of the weights from outside its capture
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16, cache_enabled=False):
            return self.network(images)


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    """float32 on the host. From a GPU the copy lands in page-locked memory from torch's caching
    host allocator: it runs at full bus speed and reuses pages already mapped, where a fresh numpy
    array for a large batch's logits (60 MB and more) page-faults on every call, which made batches
    of 8 and more three times slower per image than batches of 4 on an H100 (docs/benchmarks.md).
    The array keeps its pinned block alive; the block returns to the cache when the array dies."""
    tensor = tensor.float()
    if tensor.device.type == "cpu":
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor)
    return host.numpy()
