"""Logits → mask, confidence, uncertainty and the image-level summary, in bounded memory.

Large images are processed in bands of rows, so a 12-megapixel result never holds more than one
band of probabilities at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from prelabel_models import parallel
from prelabel_models.epistemic import SampleStatistics, measure_map
from prelabel_models.uncertainty import get_measure, pixel_maps


BAND_PIXELS = 262_144  # pixels post-processed at once: ~40 MB of temporaries with 11 classes


@dataclass(frozen=True)
class ClassSums:
    """Per class: pixels, and the sums of their confidence and uncertainty (what the summary needs).

    ``np.bincount`` builds these on the host in 2-6 ms per 360x480 image and holds the GIL all
    the while; a backend that computes the maps on its accelerator computes these there too."""

    counts: np.ndarray            # (C,) int64
    confidence_sums: np.ndarray   # (C,) float64
    uncertainty_sums: np.ndarray  # (C,) float64


@dataclass
class SegmentationMaps:
    mask: np.ndarray            # (H, W) uint8 class ids
    confidence: np.ndarray      # (H, W) float32 top-class probability
    uncertainty: np.ndarray     # (H, W) float32 in [0, 1]
    probabilities: np.ndarray | None = None  # (C, H, W) float16, only when asked for
    class_sums: ClassSums | None = None      # set where the maps were computed on a device


@dataclass(frozen=True)
class MapRequest:
    """What one image of a batch needs from the maps: its size inside the padded batch, its
    uncertainty measure, and whether its class probabilities are wanted too."""

    height: int
    width: int
    measure: str = "entropy"
    keep_probabilities: bool = False


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
                 keep_probabilities: bool = False, band_pixels: int = BAND_PIXELS) -> SegmentationMaps:
    """Applies the temperature, then derives every per-pixel map from the class probabilities."""
    classes, height, width = logits.shape
    return segment_bands([(slice(0, height), logits)], classes, height, width, temperature, measure,
                         keep_probabilities, band_pixels)


def segment_bands(bands: Iterable[tuple[slice, np.ndarray]], classes: int, height: int, width: int,
                  temperature: float = 1.0, measure: str = "entropy", keep_probabilities: bool = False,
                  band_pixels: int = BAND_PIXELS) -> SegmentationMaps:
    """Like ``segment_maps`` for logits that arrive as bands of rows (see Predictor.logit_bands).

    Each band is cut into pieces of rows that the CPU pool works on at once (numpy releases the
    GIL); the pieces running together never cover more than ``band_pixels`` pixels, which bounds
    the temporaries of a 12-megapixel image.
    """
    get_measure(measure)  # unknown names fail before any work
    maps = SegmentationMaps(mask=np.empty((height, width), np.uint8),
                            confidence=np.empty((height, width), np.float32),
                            uncertainty=np.empty((height, width), np.float32),
                            probabilities=np.empty((classes, height, width), np.float16) if keep_probabilities else None)

    def fill(piece: tuple[int, np.ndarray]) -> None:
        top, logits = piece
        band = pixel_maps(logits, temperature, measure, keep_probabilities)
        rows = slice(top, top + logits.shape[1])
        maps.mask[rows], maps.confidence[rows], maps.uncertainty[rows] = band.mask, band.confidence, band.uncertainty
        if maps.probabilities is not None:
            maps.probabilities[:, rows] = band.probabilities

    for rows, logits in bands:
        parallel.map_all(fill, _pieces(rows.start, logits, band_pixels))
    return maps


_MIN_PIECE_PIXELS = 32_768  # below this, handing work to another thread costs more than it saves


def _pieces(top: int, logits: np.ndarray, band_pixels: int) -> list[tuple[int, np.ndarray]]:
    """(first row, logits) pieces of a band, small enough that one per core fits ``band_pixels``."""
    rows, width = logits.shape[1], logits.shape[2]
    pixels, cores = rows * width, parallel.usable_cores()
    count = -(-pixels // max(1, band_pixels // cores))
    if count < cores:  # fits at once: split only as far as it pays
        count = max(1, min(cores, pixels // _MIN_PIECE_PIXELS))
    size = -(-rows // min(count, rows))
    return [(top + start, logits[:, start: start + size]) for start in range(0, rows, size)]


def maps_of_batch(logits: np.ndarray, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
    """A padded batch's logits → each image's maps on the host (what ``run_maps`` gives on a device)."""
    return [segment_maps(image_logits[:, : request.height, : request.width], temperature, request.measure,
                         request.keep_probabilities) for image_logits, request in zip(logits, requests, strict=True)]


def maps_from_statistics(statistics: SampleStatistics, measure: str, keep_probabilities: bool = False) -> SegmentationMaps:
    """Maps from several stochastic predictions: the mask from their mean probabilities, the
    uncertainty from the sampled ``measure`` (see prelabel_models.epistemic)."""
    mean = statistics.mean_probabilities
    return SegmentationMaps(mask=mean.argmax(axis=0).astype(np.uint8), confidence=mean.max(axis=0),
                            uncertainty=measure_map(statistics, measure),
                            probabilities=mean.astype(np.float16) if keep_probabilities else None)


def class_sums(maps: SegmentationMaps, num_classes: int) -> ClassSums:
    """The maps' own ``class_sums`` if their device computed them, else the host's."""
    if maps.class_sums is not None:
        return maps.class_sums
    classes = maps.mask.ravel()
    return ClassSums(np.bincount(classes, minlength=num_classes)[:num_classes],
                     np.bincount(classes, weights=maps.confidence.ravel(), minlength=num_classes)[:num_classes],
                     np.bincount(classes, weights=maps.uncertainty.ravel(), minlength=num_classes)[:num_classes])


def summarize(maps: SegmentationMaps, num_classes: int, threshold: float = 0.5) -> MapSummary:
    pixels = maps.mask.size
    sums = class_sums(maps, num_classes)
    counts = sums.counts
    shares = [
        ClassShare(class_id, float(counts[class_id] / pixels),
                   float(sums.confidence_sums[class_id] / counts[class_id]) if counts[class_id] else 0.0,
                   float(sums.uncertainty_sums[class_id] / counts[class_id]) if counts[class_id] else 0.0)
        for class_id in range(num_classes)
    ]
    return MapSummary(
        mean_uncertainty=float(maps.uncertainty.mean(dtype=np.float64)),
        uncertain_fraction=float(np.count_nonzero(maps.uncertainty > threshold) / pixels),
        uncertainty_threshold=threshold,
        classes=shares,
    )
