"""Logits → mask, confidence, uncertainty and the image-level summary, in bounded memory.

Large images are processed in bands of rows, so a 12-megapixel result never holds more than one
band of probabilities at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from prelabel_models.epistemic import SampleStatistics, measure_map
from prelabel_models.uncertainty import get_measure, pixel_maps


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
    mean_uncertainty: float = 0.0


@dataclass(frozen=True)
class MapSummary:
    mean_uncertainty: float
    uncertain_fraction: float
    uncertainty_threshold: float
    classes: list[ClassShare]


def segment_maps(logits: np.ndarray, temperature: float = 1.0, measure: str = "entropy",
                 keep_probabilities: bool = False, band_rows: int = 256) -> SegmentationMaps:
    """Applies the temperature, then derives every per-pixel map from the class probabilities."""
    classes, height, width = logits.shape
    bands = ((slice(top, min(top + band_rows, height)), logits[:, top: top + band_rows])
             for top in range(0, height, band_rows))
    return segment_bands(bands, classes, height, width, temperature, measure, keep_probabilities)


def segment_bands(bands: Iterable[tuple[slice, np.ndarray]], classes: int, height: int, width: int,
                  temperature: float = 1.0, measure: str = "entropy", keep_probabilities: bool = False,
                  band_rows: int = 256) -> SegmentationMaps:
    """Like ``segment_maps`` for logits that arrive as bands of rows (see Predictor.logit_bands)."""
    get_measure(measure)  # unknown names fail before any work
    mask = np.empty((height, width), np.uint8)
    confidence = np.empty((height, width), np.float32)
    uncertainty = np.empty((height, width), np.float32)
    probabilities = np.empty((classes, height, width), np.float16) if keep_probabilities else None
    for rows, logits in bands:
        for offset in range(0, logits.shape[1], band_rows):
            part = slice(rows.start + offset, min(rows.start + offset + band_rows, rows.stop))
            band = pixel_maps(logits[:, offset: offset + band_rows], temperature, measure, keep_probabilities)
            mask[part], confidence[part], uncertainty[part] = band.mask, band.confidence, band.uncertainty
            if probabilities is not None:
                probabilities[:, part] = band.probabilities
    return SegmentationMaps(mask, confidence, uncertainty, probabilities)


def maps_from_statistics(statistics: SampleStatistics, measure: str, keep_probabilities: bool = False) -> SegmentationMaps:
    """Maps from several stochastic predictions: the mask from their mean probabilities, the
    uncertainty from the sampled ``measure`` (see prelabel_models.epistemic)."""
    mean = statistics.mean_probabilities
    return SegmentationMaps(mask=mean.argmax(axis=0).astype(np.uint8), confidence=mean.max(axis=0),
                            uncertainty=measure_map(statistics, measure),
                            probabilities=mean.astype(np.float16) if keep_probabilities else None)


def summarize(maps: SegmentationMaps, num_classes: int, threshold: float = 0.5) -> MapSummary:
    pixels = maps.mask.size
    counts = np.bincount(maps.mask.ravel(), minlength=num_classes)[:num_classes]
    confidence_sums = np.bincount(maps.mask.ravel(), weights=maps.confidence.ravel(), minlength=num_classes)[:num_classes]
    uncertainty_sums = np.bincount(maps.mask.ravel(), weights=maps.uncertainty.ravel(), minlength=num_classes)[:num_classes]
    shares = [
        ClassShare(class_id, float(counts[class_id] / pixels),
                   float(confidence_sums[class_id] / counts[class_id]) if counts[class_id] else 0.0,
                   float(uncertainty_sums[class_id] / counts[class_id]) if counts[class_id] else 0.0)
        for class_id in range(num_classes)
    ]
    return MapSummary(
        mean_uncertainty=float(maps.uncertainty.mean(dtype=np.float64)),
        uncertain_fraction=float(np.count_nonzero(maps.uncertainty > threshold) / pixels),
        uncertainty_threshold=threshold,
        classes=shares,
    )
