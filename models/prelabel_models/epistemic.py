"""Epistemic uncertainty from several stochastic predictions of one image: MC dropout samples
or test-time augmentations. Pure numpy; every map is normalised to [0, 1].

Arrays: sample logits (S, C, H, W) → per-pixel maps (H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import cv2
import numpy as np

from prelabel_models.uncertainty import normalized_entropy, pixel_maps

MC_MEASURES = ("mc_entropy", "mutual_information", "mc_variance")
TTA_MEASURES = ("tta_entropy", "tta_disagreement")
SAMPLED_MEASURES = MC_MEASURES + TTA_MEASURES


def dropout_mask_batches(samples: int, shape: tuple[int, ...], rate: float, seed: int,
                         batch: int) -> Iterator[np.ndarray]:
    """``samples`` inverted-dropout masks, ``batch`` at a time: each element 0 with probability
    ``rate`` rounded to 1/256, else 1/(1 - that rate). Drawn as uint8 from SFC64 and scaled in one
    pass, about 2x faster than float draws or PCG64 bytes (measured): mask drawing is a visible
    share of an MC-dropout request's time. One generator draws every batch, and the samples do not
    depend on ``batch`` (``dropout_masks``) as long as it is a multiple of 4: the generator hands
    out bytes four at a time and drops what a draw leaves of them."""
    if not 0 < rate < 1:
        raise ValueError(f"dropout rate must be in (0, 1), got {rate}")
    if batch % 4:
        raise ValueError(f"batch must be a multiple of 4, got {batch}")
    threshold = min(255, max(1, round(rate * 256)))
    generator = np.random.Generator(np.random.SFC64(seed))
    for start in range(0, samples, batch):
        draws = generator.integers(0, 256, (min(batch, samples - start), *shape), dtype=np.uint8)
        yield np.multiply(draws >= threshold, np.float32(256 / (256 - threshold)), dtype=np.float32)


def dropout_masks(samples: int, shape: tuple[int, ...], rate: float, seed: int) -> np.ndarray:
    """All ``samples`` masks of ``dropout_mask_batches`` in one array."""
    return np.concatenate(list(dropout_mask_batches(samples, shape, rate, seed, -(-samples // 4) * 4)))


@dataclass(frozen=True)
class SampleStatistics:
    mean_probabilities: np.ndarray   # (C, H, W)
    predictive_entropy: np.ndarray   # H[mean p] / log C
    mutual_information: np.ndarray   # (H[mean p] - mean H[p]) / log C: BALD, the epistemic part
    variance: np.ndarray             # 4 x variance over samples of the chosen class's probability
    disagreement: np.ndarray         # share of samples whose class differs from the consensus


def sample_statistics(sample_logits: np.ndarray, temperature: float = 1.0) -> SampleStatistics:
    per_sample = [pixel_maps(logits, temperature, "entropy", keep_probabilities=True) for logits in sample_logits]
    probabilities = np.stack([maps.probabilities for maps in per_sample])
    mean = probabilities.mean(axis=0)
    entropy = normalized_entropy(mean)
    expected_entropy = np.mean([maps.uncertainty for maps in per_sample], axis=0)
    consensus = mean.argmax(axis=0)
    chosen = np.take_along_axis(probabilities, consensus[None, None], axis=1)[:, 0]
    disagreement = (np.stack([maps.mask for maps in per_sample]) != consensus[None]).mean(axis=0)
    return SampleStatistics(
        mean_probabilities=mean,
        predictive_entropy=entropy,
        mutual_information=np.clip(entropy - expected_entropy, 0.0, 1.0),
        variance=np.clip(4.0 * chosen.var(axis=0), 0.0, 1.0),
        disagreement=disagreement.astype(np.float32),
    )


def resize_statistics(statistics: SampleStatistics, size: tuple[int, int], crop: tuple[int, int]) -> SampleStatistics:
    """Statistics computed at a network's output resolution, bilinearly resized to ``size`` (the
    padded input) and cropped to ``crop`` (the image). Every map stays in its range: a bilinear
    value is a convex combination of its neighbours, so probabilities still sum to one."""
    height, width = crop

    def resize(plane: np.ndarray) -> np.ndarray:
        if plane.shape[-2:] == size:
            return plane[..., :height, :width]
        if plane.ndim == 2:
            return cv2.resize(plane, size[::-1], interpolation=cv2.INTER_LINEAR)[:height, :width]
        channels_last = cv2.resize(np.ascontiguousarray(plane.transpose(1, 2, 0)), size[::-1], interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(channels_last.reshape(*size, -1)[:height, :width].transpose(2, 0, 1))

    return SampleStatistics(*(resize(getattr(statistics, f.name)) for f in fields(SampleStatistics)))


_MAP_OF_MEASURE: dict[str, Callable[[SampleStatistics], np.ndarray]] = {
    "mc_entropy": lambda s: s.predictive_entropy,
    "mutual_information": lambda s: s.mutual_information,
    "mc_variance": lambda s: s.variance,
    "tta_entropy": lambda s: s.predictive_entropy,
    "tta_disagreement": lambda s: s.disagreement,
}


def measure_map(statistics: SampleStatistics, measure: str) -> np.ndarray:
    try:
        return _MAP_OF_MEASURE[measure](statistics).astype(np.float32)
    except KeyError:
        raise ValueError(f"unknown sampled measure {measure!r}; choose one of {list(SAMPLED_MEASURES)}") from None
