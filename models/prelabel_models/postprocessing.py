"""Logits → mask, confidence, uncertainty and the image-level summary, in bounded memory.

Large images are processed in bands of rows, so a 12-megapixel result never holds more than one
band of probabilities at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prelabel_models.uncertainty import get_measure, softmax


@dataclass
class SegmentationMaps:
    mask: np.ndarray            # (H, W) uint8 class ids
    confidence: np.ndarray      # (H, W) float32 top-class probability
    uncertainty: np.ndarray     # (H, W) float32 in [0, 1]
    probabilities: np.ndarray | None = None  # (C, H, W) float16, only when asked for


@dataclass(frozen=True)
class ClassShare:
    class_id: int
    pixel_fraction: float
    mean_confidence: float


@dataclass(frozen=True)
class MapSummary:
    mean_uncertainty: float
    uncertain_fraction: float
    uncertainty_threshold: float
    classes: list[ClassShare]


def segment_maps(logits: np.ndarray, temperature: float = 1.0, measure: str = "entropy",
                 keep_probabilities: bool = False, band_rows: int = 256) -> SegmentationMaps:
    """Applies the temperature, then derives every per-pixel map from the class probabilities."""
    measure_fn = get_measure(measure)
    classes, height, width = logits.shape
    mask = np.empty((height, width), np.uint8)
    confidence = np.empty((height, width), np.float32)
    uncertainty = np.empty((height, width), np.float32)
    probabilities = np.empty((classes, height, width), np.float16) if keep_probabilities else None
    for top in range(0, height, band_rows):
        rows = slice(top, min(top + band_rows, height))
        band = softmax(logits[:, rows], temperature)
        mask[rows] = band.argmax(axis=0)
        confidence[rows] = band.max(axis=0)
        uncertainty[rows] = measure_fn(band)
        if probabilities is not None:
            probabilities[:, rows] = band
    return SegmentationMaps(mask, confidence, uncertainty, probabilities)


def summarize(maps: SegmentationMaps, num_classes: int, threshold: float = 0.5) -> MapSummary:
    pixels = maps.mask.size
    counts = np.bincount(maps.mask.ravel(), minlength=num_classes)[:num_classes]
    confidence_sums = np.bincount(maps.mask.ravel(), weights=maps.confidence.ravel(), minlength=num_classes)[:num_classes]
    shares = [
        ClassShare(class_id, float(counts[class_id] / pixels),
                   float(confidence_sums[class_id] / counts[class_id]) if counts[class_id] else 0.0)
        for class_id in range(num_classes)
    ]
    return MapSummary(
        mean_uncertainty=float(maps.uncertainty.mean(dtype=np.float64)),
        uncertain_fraction=float(np.count_nonzero(maps.uncertainty > threshold) / pixels),
        uncertainty_threshold=threshold,
        classes=shares,
    )
