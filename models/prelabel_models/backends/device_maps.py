"""Mask, confidence and uncertainty computed where the logits are: on the accelerator.

The torch twin of ``uncertainty.pixel_maps`` (same formulas, same tie rule, tested against it).
On a GPU the host was the bottleneck, not the network: an H100 served 33-70 images/s while the
network alone ran 1343. Each image's float32 logits (7.6 MB at 360x480 with 11 classes) crossed
the bus and then went through about sixty numpy operations on the host, each of which gives up and
takes back the GIL; with 16 cores and dozens of requests in flight the threads spent their time
waiting for the GIL (docs/benchmarks.md). Here the whole batch takes a dozen kernels, and only
the uint8 mask and two float32 maps per pixel come back (9 bytes per pixel instead of 44), with
each image's per-class sums for its summary (``np.bincount`` would hold the GIL for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from prelabel_models.postprocessing import ClassSums, MapRequest, SegmentationMaps

_DeviceMeasure = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def batch_maps(logits: torch.Tensor, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
    """(N, C, H, W) logits on any device → each image's maps on the host, cropped to its own size
    (``requests[i]`` names image i's size, measure and whether its probabilities are wanted)."""
    shifted = logits.float() / temperature
    shifted -= shifted.amax(dim=1, keepdim=True)
    classes = shifted.shape[1]
    mask = shifted.argmax(dim=1).to(torch.uint8 if classes <= 256 else torch.int32)  # first of tied classes, as on the host
    exponentials = shifted.exp()
    total = exponentials.sum(dim=1)
    confidence = total.reciprocal()
    uncertainty = _uncertainty(shifted, exponentials, total, confidence, [request.measure for request in requests])
    return _cropped_on_host(requests, mask, confidence, uncertainty, exponentials)


def _uncertainty(shifted: torch.Tensor, exponentials: torch.Tensor, total: torch.Tensor, confidence: torch.Tensor,
                 measures: list[str]) -> torch.Tensor:
    """Each image's map by its own measure, each measure computed once over the images that ask for it."""
    uncertainty = torch.empty_like(confidence)
    for measure in dict.fromkeys(measures):
        images = [i for i, name in enumerate(measures) if name == measure]
        rows = slice(None) if len(images) == len(measures) else images
        uncertainty[rows] = _MEASURES[measure](shifted[rows], exponentials[rows], total[rows], confidence[rows])
    return uncertainty.clamp_(0.0, 1.0)


def _cropped_on_host(requests: list[MapRequest], mask: torch.Tensor, confidence: torch.Tensor,
                     uncertainty: torch.Tensor, exponentials: torch.Tensor) -> list[SegmentationMaps]:
    """Every image's maps and class sums on the host, cropped to its size.

    The batch crosses the bus whole, in four copies and one wait, and is cut into images on the
    host as numpy views. Copying image by image took about 18 torch calls per image, and the
    batcher's thread gives up the GIL on each one and must win it back from the request threads."""
    classes = exponentials.shape[1]
    sums = _class_sums(mask, confidence, uncertainty, requests, classes)
    on_host = [_pinned_copy(t) for t in (mask, confidence, uncertainty, sums)]
    probabilities = {i: _pinned_copy((exponentials[i] * confidence[i])[:, : request.height, : request.width].half())
                     for i, request in enumerate(requests) if request.keep_probabilities}
    if mask.device.type == "cuda":
        torch.cuda.current_stream(mask.device).synchronize()  # the copies above were queued, not waited for
    masks, confidences, uncertainties, class_sums = (t.numpy() for t in on_host)
    maps = []
    for i, request in enumerate(requests):
        pixels = np.s_[i, : request.height, : request.width]
        counts, confidence_sums, uncertainty_sums = class_sums[i]
        maps.append(SegmentationMaps(masks[pixels], confidences[pixels], uncertainties[pixels],
                                     probabilities[i].numpy() if i in probabilities else None,
                                     ClassSums(counts.astype(np.int64), confidence_sums, uncertainty_sums)))
    return maps


def _class_sums(mask: torch.Tensor, confidence: torch.Tensor, uncertainty: torch.Tensor, requests: list[MapRequest],
                classes: int) -> torch.Tensor:
    """(N, 3, classes) float64: each image's pixels, confidence sum and uncertainty sum per class,
    over its own pixels only (not the batch's padding), in one scatter for the whole batch."""
    count, height, width = mask.shape
    device = mask.device
    sizes = _to_device(torch.tensor([(r.height, r.width) for r in requests]), device)
    heights, widths = sizes[:, 0, None, None], sizes[:, 1, None, None]
    inside = (torch.arange(height, device=device)[None, :, None] < heights) & \
             (torch.arange(width, device=device)[None, None, :] < widths)
    weights = torch.stack((inside, confidence * inside, uncertainty * inside)).double()  # (3, N, H, W)
    index = mask.long() + classes * torch.arange(count, device=device)[:, None, None]  # class ids, image by image
    sums = torch.zeros(3, count * classes, dtype=torch.float64, device=device)
    sums.index_add_(1, index.reshape(-1), weights.reshape(3, -1))
    return sums.reshape(3, count, classes).transpose(0, 1)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor queued behind the forward pass: a copy from pageable memory would make
    this thread wait for the whole pass before it could queue the kernels after it."""
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A host copy that the device writes without blocking this thread. Pinned blocks come from
    torch's caching host allocator, so after the first batches no new pages are mapped."""
    if tensor.device.type == "cpu":
        return tensor.contiguous()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


def _entropy(shifted: torch.Tensor, exponentials: torch.Tensor, total: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    expected = (exponentials * shifted).sum(dim=1) * confidence
    return (total.log() - expected) / math.log(shifted.shape[1])


def _margin(shifted: torch.Tensor, exponentials: torch.Tensor, total: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
    runner_up = shifted.topk(2, dim=1).values[:, 1]  # 0 where two classes tie for the top: margin 1
    return 1.0 - (1.0 - runner_up.exp()) * confidence


def _least_confidence(shifted: torch.Tensor, exponentials: torch.Tensor, total: torch.Tensor,
                      confidence: torch.Tensor) -> torch.Tensor:
    classes = shifted.shape[1]
    return (1.0 - confidence) * (classes / (classes - 1))


_MEASURES: dict[str, _DeviceMeasure] = {"entropy": _entropy, "margin": _margin, "least_confidence": _least_confidence}
