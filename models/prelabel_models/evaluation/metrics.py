"""Pure, vectorised metrics for masks and for the uncertainty that comes with them.

Mask quality comes from a confusion matrix (accumulated per image, so nothing with a class axis is
ever kept for all pixels). Uncertainty quality treats the wrong pixels as positives and asks how
well each uncertainty map finds them: AUROC and AUPR (scikit-learn), calibration of the top-class
confidence (15 equal-width bins), PAvPU on 4x4 patches and the *review curve*.

Undefined values (a class that never occurs, a split without errors) are NaN here and become
``null`` only at the JSON edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import auc, average_precision_score, confusion_matrix as _sk_confusion_matrix, roc_curve

from prelabel_models.image_files import DatasetError

ECE_BINS = 15
REVIEW_FRACTIONS = (0.05, 0.10, 0.20)
PAVPU_PATCH = 4
PAVPU_ACCURACY = 0.5
# The server's map summary counts a pixel as uncertain above 0.5 (postprocessing.summarize); using
# the same cut-off makes PAvPU describe the pixels a user is actually shown as uncertain.
PAVPU_THRESHOLD = 0.5
PAVPU_SWEEP = tuple(round(0.1 * i, 1) for i in range(1, 10))


def check_label_values(labels: np.ndarray, num_classes: int, ignore_index: int | None) -> None:
    """Labels (the ignore index already left out) must be classes: any other value is an error,
    never silently dropped or counted as some class."""
    stray = labels >= num_classes
    if stray.any():
        raise DatasetError(f"labels {sorted(set(np.unique(labels[stray]).tolist()))} are not classes "
                           f"0..{num_classes - 1} nor the ignore index {ignore_index}")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """(C, C) int64 counts, rows = label, columns = prediction; ``ignore_index`` pixels are skipped.

    A label outside ``0..C-1`` that is not the ignore index is an error, never silently dropped.
    """
    labels, predictions = labels.ravel(), predictions.ravel()
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    labels, predictions = labels[valid], predictions[valid]
    check_label_values(labels, num_classes, ignore_index)
    if labels.size == 0:
        return np.zeros((num_classes, num_classes), np.int64)
    return _sk_confusion_matrix(labels, predictions, labels=np.arange(num_classes)).astype(np.int64)


@dataclass(frozen=True)
class SegmentationScores:
    """Mask quality from a confusion matrix. Means skip classes that are undefined (NaN)."""

    iou: tuple[float, ...]             # per class: TP / (TP + FP + FN); NaN if the class never occurs
    mean_iou: float
    pixel_accuracy: float
    class_accuracy: tuple[float, ...]  # per class recall; NaN if the class has no labelled pixel
    mean_class_accuracy: float


def segmentation_scores(confusion: np.ndarray) -> SegmentationScores:
    confusion = confusion.astype(np.float64)
    true_positives = np.diag(confusion)
    labelled, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    iou = _ratio(true_positives, labelled + predicted - true_positives)
    class_accuracy = _ratio(true_positives, labelled)
    total = confusion.sum()
    return SegmentationScores(
        iou=tuple(iou.tolist()),
        mean_iou=_nanmean(iou),
        pixel_accuracy=float(true_positives.sum() / total) if total else float("nan"),
        class_accuracy=tuple(class_accuracy.tolist()),
        mean_class_accuracy=_nanmean(class_accuracy),
    )


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-class confidence histogram: the data of a reliability diagram, additive over images.

    Bins are equal-width on [0, 1] and right-closed, ``(k/B, (k+1)/B]`` (the first also holds 0), as
    in Guo et al. 2017 and ``sklearn.calibration.calibration_curve``. Kept as sums, not means, so
    per-image bins add up exactly; ECE is then the count-weighted gap, so no per-pixel array is kept.
    """

    counts: np.ndarray           # (B,) int64 pixels per bin
    confidence_sums: np.ndarray  # (B,) float64
    correct_counts: np.ndarray   # (B,) int64

    def __add__(self, other: "ReliabilityBins") -> "ReliabilityBins":
        return ReliabilityBins(self.counts + other.counts, self.confidence_sums + other.confidence_sums,
                               self.correct_counts + other.correct_counts)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.counts) + 1)

    @property
    def mean_confidence(self) -> np.ndarray:
        return _ratio(self.confidence_sums, self.counts)

    @property
    def accuracy(self) -> np.ndarray:
        return _ratio(self.correct_counts.astype(np.float64), self.counts)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (share of pixels) x |accuracy - confidence|."""
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        gaps = np.abs(self.correct_counts - self.confidence_sums)  # = count x |acc - conf|
        return float(gaps.sum() / total)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bins the top-class ``confidence`` of each pixel with whether its prediction was ``correct``."""
    confidence = confidence.ravel().astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.searchsorted(inner_edges, confidence)
    return ReliabilityBins(
        counts=np.bincount(bins, minlength=n_bins).astype(np.int64),
        confidence_sums=np.bincount(bins, weights=confidence, minlength=n_bins),
        correct_counts=np.bincount(bins, weights=correct.ravel(), minlength=n_bins).astype(np.int64),
    )


def empty_reliability_bins(n_bins: int = ECE_BINS) -> ReliabilityBins:
    return ReliabilityBins(np.zeros(n_bins, np.int64), np.zeros(n_bins), np.zeros(n_bins, np.int64))


@dataclass(frozen=True)
class ReviewCurve:
    """Share of all wrong pixels found after reviewing the most uncertain share of pixels."""

    reviewed: tuple[float, ...]
    errors_found: tuple[float, ...]


@dataclass(frozen=True)
class ErrorDetection:
    """How well an uncertainty map finds the wrong pixels (wrong = positive, uncertainty = score)."""

    auroc: float
    aupr: float
    error_rate: float                 # share of wrong pixels: AUPR of a random ranking
    review: tuple[float, ...]          # errors found at ``review_fractions``
    review_fractions: tuple[float, ...]
    curve: ReviewCurve


def misclassification_detection(uncertainty: np.ndarray, wrong: np.ndarray,
                                review_fractions: Sequence[float] = REVIEW_FRACTIONS,
                                curve_points: int = 101) -> ErrorDetection:
    """AUROC, AUPR and the review curve of ``uncertainty`` as a detector of ``wrong`` pixels.

    The review curve is read off the same ROC curve: reviewing everything at or above a threshold
    flags TP + FP pixels and finds TPR of the errors. Between ROC points it is interpolated
    linearly, which is the expected outcome of breaking ties in uncertainty at random, so the result
    does not depend on pixel order.
    """
    uncertainty, wrong = uncertainty.ravel(), wrong.ravel().astype(bool)
    fractions = tuple(float(f) for f in review_fractions)
    grid = np.linspace(0.0, 1.0, curve_points)
    errors, pixels = int(wrong.sum()), wrong.size
    if errors == 0 or errors == pixels:
        nan_review = tuple(float("nan") for _ in fractions)
        curve = ReviewCurve(tuple(grid.tolist()), tuple(float("nan") for _ in grid))
        return ErrorDetection(float("nan"), float("nan"), errors / max(pixels, 1), nan_review, fractions, curve)
    false_positive_rate, true_positive_rate, _ = roc_curve(wrong, uncertainty)
    reviewed = (true_positive_rate * errors + false_positive_rate * (pixels - errors)) / pixels
    found = np.interp(grid, reviewed, true_positive_rate)
    return ErrorDetection(
        auroc=float(auc(false_positive_rate, true_positive_rate)),
        aupr=float(average_precision_score(wrong, uncertainty)),
        error_rate=errors / pixels,
        review=tuple(float(v) for v in np.interp(fractions, reviewed, true_positive_rate)),
        review_fractions=fractions,
        curve=ReviewCurve(tuple(grid.tolist()), tuple(found.tolist())),
    )


@dataclass(frozen=True)
class PatchStats:
    """Per-patch accuracy and mean uncertainty, kept so PAvPU can be read at any threshold."""

    accurate: np.ndarray     # (patches,) bool: at least PAVPU_ACCURACY of its valid pixels are right
    uncertainty: np.ndarray  # (patches,) float32 mean uncertainty of its valid pixels

    @classmethod
    def concatenate(cls, parts: Sequence["PatchStats"]) -> "PatchStats":
        if not parts:
            return cls(np.zeros(0, bool), np.zeros(0, np.float32))
        return cls(np.concatenate([p.accurate for p in parts]), np.concatenate([p.uncertainty for p in parts]))


def patch_stats(correct: np.ndarray, uncertainty: np.ndarray, valid: np.ndarray,
                patch: int = PAVPU_PATCH, min_accuracy: float = PAVPU_ACCURACY) -> PatchStats:
    """Splits (H, W) maps into ``patch`` x ``patch`` patches (Mukhoti & Gal 2018).

    Only valid (labelled) pixels count; a patch with none is left out. Sides that are not a
    multiple of ``patch`` get partial patches at the bottom and right.
    """
    valid = valid.astype(bool)
    counts = _patch_sums(valid.astype(np.float64), patch)
    right = _patch_sums((correct.astype(bool) & valid).astype(np.float64), patch)
    uncertain = _patch_sums(np.where(valid, uncertainty, 0).astype(np.float64), patch)
    keep = counts > 0
    return PatchStats(accurate=(right[keep] / counts[keep]) >= min_accuracy,
                      uncertainty=(uncertain[keep] / counts[keep]).astype(np.float32))


def pavpu(stats: PatchStats, threshold: float = PAVPU_THRESHOLD) -> float:
    """(accurate & certain + inaccurate & uncertain) / patches; uncertain means mean uncertainty > threshold."""
    if stats.accurate.size == 0:
        return float("nan")
    uncertain = stats.uncertainty > threshold
    return float(np.count_nonzero(stats.accurate != uncertain) / stats.accurate.size)


def _patch_sums(values: np.ndarray, patch: int) -> np.ndarray:
    height, width = values.shape
    padded = np.pad(values, [(0, -height % patch), (0, -width % patch)])
    rows, cols = padded.shape[0] // patch, padded.shape[1] // patch
    return padded.reshape(rows, patch, cols, patch).sum(axis=(1, 3)).ravel()


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")
