"""`prelabel evaluate`: masks and uncertainty of a model package, measured on a labelled split
through exactly the code the server runs (Predictor → segment_maps with the card's temperature).

Per image only small things are kept: a confusion matrix, calibration bins, 4x4 patch statistics
and, for the valid pixels, one float32 uncertainty per measure plus one bool "wrong". For CamVid
val (101 images, ~17M pixels) that is about 270 MB, and nothing with a class axis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prelabel_models.card import ModelCard
from prelabel_models.evaluation.metrics import (
    PAVPU_SWEEP,
    PAVPU_THRESHOLD,
    ErrorDetection,
    PatchStats,
    ReliabilityBins,
    SegmentationScores,
    confusion_matrix,
    empty_reliability_bins,
    misclassification_detection,
    patch_stats,
    pavpu,
    reliability_bins,
    segmentation_scores,
)
from prelabel_models.evaluation.runner import labelled_logits, open_predictor, split_pairs
from prelabel_models.postprocessing import segment_maps
from prelabel_models.uncertainty import DEFAULT_MEASURE, UNCERTAINTY_MEASURES


@dataclass(frozen=True)
class MeasureQuality:
    """How well one uncertainty measure points at the wrong pixels."""

    measure: str
    detection: ErrorDetection
    pavpu: float                           # at ``pavpu_threshold``
    pavpu_threshold: float
    pavpu_sweep: tuple[tuple[float, float], ...]  # (threshold, PAvPU) pairs


@dataclass(frozen=True)
class Evaluation:
    """Everything ``prelabel evaluate`` measured; ``to_json`` is its only dict form."""

    model: str
    version: str
    backend: str
    data: str
    split: str
    images: int
    pixels: int                            # labelled (scored) pixels
    temperature: float                     # the card's, applied for "after" and for every measure
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    segmentation: SegmentationScores
    calibration_before: ReliabilityBins    # temperature 1
    calibration_after: ReliabilityBins     # card temperature
    uncertainty: tuple[MeasureQuality, ...]
    default_measure: str
    seconds: float


@dataclass
class _Accumulator:
    """Folds images into the running totals; ``finish`` turns them into an :class:`Evaluation`."""

    card: ModelCard
    measures: Sequence[str]
    confusion: np.ndarray = field(init=False)
    before: ReliabilityBins = field(default_factory=empty_reliability_bins)
    after: ReliabilityBins = field(default_factory=empty_reliability_bins)
    wrong: list[np.ndarray] = field(default_factory=list)
    uncertainty: dict[str, list[np.ndarray]] = field(default_factory=dict)
    patches: dict[str, list[PatchStats]] = field(default_factory=dict)
    images: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.card.num_classes, self.card.num_classes), np.int64)
        self.uncertainty = {m: [] for m in self.measures}
        self.patches = {m: [] for m in self.measures}

    def add(self, logits: np.ndarray, label: np.ndarray) -> None:
        ignore = self.card.ignore_index
        maps = {m: segment_maps(logits, self.card.temperature, m) for m in self.measures}
        first = maps[self.measures[0]]
        valid = label != ignore if ignore is not None else np.ones(label.shape, bool)
        correct = first.mask == label
        self.confusion += confusion_matrix(label, first.mask, self.card.num_classes, ignore)
        self.after += reliability_bins(first.confidence[valid], correct[valid])
        untempered = first if self.card.temperature == 1.0 else segment_maps(logits, 1.0, self.measures[0])
        self.before += reliability_bins(untempered.confidence[valid], correct[valid])
        self.wrong.append(~correct[valid])
        for measure, measure_maps in maps.items():
            self.uncertainty[measure].append(measure_maps.uncertainty[valid])
            self.patches[measure].append(patch_stats(correct, measure_maps.uncertainty, valid))
        self.images += 1

    def quality(self) -> tuple[MeasureQuality, ...]:
        wrong = np.concatenate(self.wrong) if self.wrong else np.zeros(0, bool)
        results = []
        for measure in self.measures:
            uncertainty = np.concatenate(self.uncertainty.pop(measure)) if wrong.size else np.zeros(0, np.float32)
            patches = PatchStats.concatenate(self.patches.pop(measure))
            results.append(MeasureQuality(
                measure=measure,
                detection=misclassification_detection(uncertainty, wrong),
                pavpu=pavpu(patches, PAVPU_THRESHOLD), pavpu_threshold=PAVPU_THRESHOLD,
                pavpu_sweep=tuple((t, pavpu(patches, t)) for t in PAVPU_SWEEP)))
            del uncertainty
        return tuple(results)


def evaluate(folder: Path | str, data: Path | str, split: str = "val", backend: str = "torch",
             measures: Sequence[str] = tuple(UNCERTAINTY_MEASURES), threads: int | None = None) -> Evaluation:
    """Runs every image of ``split`` through the server's inference path and scores it."""
    unknown = sorted(set(measures) - set(UNCERTAINTY_MEASURES))
    if unknown or not measures:
        raise ValueError(f"unknown uncertainty measures {unknown}; choose from {sorted(UNCERTAINTY_MEASURES)}")
    started = time.perf_counter()
    predictor = open_predictor(folder, backend, threads)
    card = predictor.card
    totals = _Accumulator(card, list(measures))
    for logits, label in labelled_logits(predictor, split_pairs(data, split), f"evaluate {card.name}"):
        totals.add(logits, label)
    quality = totals.quality()
    return Evaluation(
        model=card.name, version=card.version, backend=predictor.backend.name, data=str(data), split=split,
        images=totals.images, pixels=int(totals.confusion.sum()), temperature=card.temperature,
        class_names=tuple(c.name for c in card.classes), class_colors=tuple(c.color for c in card.classes),
        segmentation=segmentation_scores(totals.confusion),
        calibration_before=totals.before, calibration_after=totals.after, uncertainty=quality,
        default_measure=DEFAULT_MEASURE if DEFAULT_MEASURE in measures else measures[0],
        seconds=time.perf_counter() - started)
