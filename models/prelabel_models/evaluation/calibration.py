"""Temperature scaling (Guo et al. 2017): one scalar T, fitted by minimum NLL on held-out logits.

Dividing logits by T never changes the mask (argmax), only how confident it claims to be. The
server divides by ``card.temperature`` before softmax, so fitting T here and writing it into the
card is all calibration takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from prelabel_models.card import ModelCard
from prelabel_models.evaluation.metrics import check_label_values, reliability_bins
from prelabel_models.evaluation.runner import labelled_logits, open_predictor, split_pairs
from prelabel_models.image_files import DatasetError
from prelabel_models.predictor import Predictor

# Searched as inverse temperature 1/T, where the NLL is convex, so the bounded search finds the optimum.
INVERSE_TEMPERATURE_BOUNDS = (0.02, 20.0)
DEFAULT_MAX_PIXELS = 1_000_000


@dataclass(frozen=True)
class LogitSample:
    """Logits of a random subsample of labelled pixels: enough to fit one scalar, small to keep."""

    logits: np.ndarray  # (N, C) float32, before temperature
    labels: np.ndarray  # (N,) int64

    @classmethod
    def concatenate(cls, parts: list["LogitSample"]) -> "LogitSample":
        return cls(np.concatenate([p.logits for p in parts]), np.concatenate([p.labels for p in parts]))


def sample_pixels(logits: np.ndarray, label: np.ndarray, ignore_index: int | None, count: int,
                  rng: np.random.Generator) -> LogitSample:
    """Up to ``count`` labelled pixels of one image, drawn without replacement."""
    flat_labels = label.ravel()
    valid = np.flatnonzero(flat_labels != ignore_index) if ignore_index is not None else np.arange(flat_labels.size)
    check_label_values(flat_labels[valid], logits.shape[0], ignore_index)  # every pixel, not only those sampled
    chosen = np.sort(rng.choice(valid, size=min(count, valid.size), replace=False))
    flat_logits = logits.reshape(logits.shape[0], -1)
    return LogitSample(np.ascontiguousarray(flat_logits[:, chosen].T), flat_labels[chosen].astype(np.int64))


def negative_log_likelihood(sample: LogitSample, temperature: float = 1.0) -> float:
    """Mean NLL of the labels under softmax(logits / temperature), in nats per pixel."""
    log_probabilities = log_softmax(sample.logits.astype(np.float64) / temperature, axis=1)
    return float(-log_probabilities[np.arange(sample.labels.size), sample.labels].mean())


def expected_calibration_error(sample: LogitSample, temperature: float = 1.0) -> float:
    log_probabilities = log_softmax(sample.logits.astype(np.float64) / temperature, axis=1)
    correct = log_probabilities.argmax(axis=1) == sample.labels
    return reliability_bins(np.exp(log_probabilities.max(axis=1)), correct).ece


def fit_temperature(sample: LogitSample) -> float:
    """The T > 0 that minimises the NLL of ``sample``."""
    if sample.labels.size == 0:
        raise DatasetError("cannot fit a temperature on zero labelled pixels: every label pixel is the ignore index")
    result = minimize_scalar(lambda inverse: negative_log_likelihood(sample, 1.0 / inverse),
                             bounds=INVERSE_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(1.0 / result.x)


@dataclass(frozen=True)
class CalibrationResult:
    """Before/after numbers on the fitted sample (the pixels the temperature was fitted on)."""

    temperature: float
    previous_temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    pixels: int
    images: int
    split: str
    seed: int


def collect_sample(predictor: Predictor, pairs: list[tuple[Path, Path]], max_pixels: int, seed: int) -> LogitSample:
    """A seeded sample of at most ``max_pixels`` labelled pixels, spread evenly over the images."""
    rng = np.random.default_rng(seed)
    per_image = max(1, max_pixels // max(1, len(pairs)))
    ignore = predictor.card.ignore_index
    return LogitSample.concatenate([sample_pixels(logits, label, ignore, per_image, rng)
                                    for logits, label in labelled_logits(predictor, pairs, "calibrate")])


def calibrate(folder: Path | str, data: Path | str, split: str = "val", backend: str = "torch",
              max_pixels: int = DEFAULT_MAX_PIXELS, seed: int = 0, threads: int | None = None) -> CalibrationResult:
    """Fits T on ``split`` and writes it into the package's card (and its provenance)."""
    predictor = open_predictor(folder, backend, threads)
    pairs = split_pairs(data, split)
    sample = collect_sample(predictor, pairs, max_pixels, seed)
    temperature = round(fit_temperature(sample), 4)  # as stored in the card
    result = CalibrationResult(
        temperature=temperature, previous_temperature=predictor.card.temperature,
        nll_before=negative_log_likelihood(sample), nll_after=negative_log_likelihood(sample, temperature),
        ece_before=expected_calibration_error(sample), ece_after=expected_calibration_error(sample, temperature),
        pixels=int(sample.labels.size), images=len(pairs), split=split, seed=seed)
    write_temperature(Path(folder), result)
    return result


def write_temperature(folder: Path, result: CalibrationResult) -> None:
    """Stores T in ``card.json``; the rest of the card is kept as it was."""
    card = ModelCard.load(folder)
    record = {"split": result.split, "pixels": result.pixels, "images": result.images, "seed": result.seed,
              "nll_before": round(result.nll_before, 5), "nll_after": round(result.nll_after, 5),
              "ece_before": round(result.ece_before, 5), "ece_after": round(result.ece_after, 5)}
    provenance = {**card.provenance, "calibration": record}
    card.model_copy(update={"temperature": result.temperature, "provenance": provenance}).save(folder)
