"""Review hints: the connected areas of high uncertainty a person should check first, ordered by
how many wrong pixels they are expected to hold."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_CLOSING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
REGION_CELL = 128  # pixels: an uncertain area wider or taller than this is cut into cells of this size


@dataclass(frozen=True)
class ReviewRegion:
    x: int
    y: int
    width: int
    height: int
    area: int                     # pixels in the region
    mean_uncertainty: float
    expected_errors: float        # sum over its pixels of (1 - top-class probability)
    class_ids: tuple[int, ...]    # predicted classes inside, most frequent first (the classes in doubt)
    polygon: tuple[tuple[int, int], ...]  # outline, simplified to within 2 pixels


def review_regions(uncertainty: np.ndarray, confidence: np.ndarray, mask: np.ndarray, threshold: float = 0.5,
                   min_area: int = 64, max_regions: int = 10, cell: int = REGION_CELL) -> list[ReviewRegion]:
    """Regions where uncertainty > ``threshold`` (small gaps closed, specks under ``min_area`` px
    dropped), the ``max_regions`` with the most expected errors first.

    The uncertain class boundaries of a scene join into one network once gaps are closed: its box
    was the whole image in 5 of 11 CamVid images, useless as a place to look. An area wider or
    taller than ``cell`` is therefore cut along a grid of ``cell``-pixel lines into pieces that
    each get their own box and rank."""
    uncertain = cv2.morphologyEx((uncertainty > threshold).astype(np.uint8), cv2.MORPH_CLOSE, _CLOSING)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(uncertain, connectivity=8)
    if count <= 1:
        return []
    too_large = np.flatnonzero((stats[1:, cv2.CC_STAT_WIDTH] > cell) | (stats[1:, cv2.CC_STAT_HEIGHT] > cell)) + 1
    if too_large.size:
        grid = np.zeros(uncertain.shape, bool)
        grid[cell::cell, :] = True
        grid[:, cell::cell] = True
        uncertain[grid & np.isin(labels, too_large)] = 0
        count, labels, stats, _ = cv2.connectedComponentsWithStats(uncertain, connectivity=8)
    flat = labels.ravel()
    expected = np.bincount(flat, weights=(1.0 - confidence).ravel(), minlength=count)
    uncertainty_sum = np.bincount(flat, weights=uncertainty.ravel(), minlength=count)
    areas = stats[:, cv2.CC_STAT_AREA]
    candidates = [k for k in range(1, count) if areas[k] >= min_area]
    candidates.sort(key=lambda k: -expected[k])
    return [_region(k, labels, stats, mask, expected[k], uncertainty_sum[k]) for k in candidates[:max_regions]]


def _region(label: int, labels: np.ndarray, stats: np.ndarray, mask: np.ndarray, expected: float,
            uncertainty_sum: float) -> ReviewRegion:
    x, y, width, height, area = (int(v) for v in stats[label][:5])
    inside = labels[y: y + height, x: x + width] == label
    classes = np.bincount(mask[y: y + height, x: x + width][inside], minlength=1)
    ranked = tuple(int(c) for c in np.argsort(-classes, kind="stable") if classes[c] > 0)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 2.0, True).reshape(-1, 2)
    polygon = tuple((int(px) + x, int(py) + y) for px, py in outline)
    return ReviewRegion(x, y, width, height, area, uncertainty_sum / area, float(expected), ranked, polygon)
