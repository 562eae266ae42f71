"""Softmax with temperature and per-pixel uncertainty measures, each normalised to [0, 1].

Arrays are class-first: logits and probabilities have shape (C, ...); maps drop the class axis.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

UncertaintyMeasure = Callable[[np.ndarray], np.ndarray]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    shifted = logits / np.float32(temperature) if temperature != 1.0 else logits.copy()
    shifted -= shifted.max(axis=0, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=0, keepdims=True)
    return shifted


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Predictive entropy / log(C): 0 for a one-hot prediction, 1 for a uniform one."""
    classes = probabilities.shape[0]
    plogp = probabilities * np.log(np.maximum(probabilities, np.float32(1e-12)))
    return np.clip(-plogp.sum(axis=0) / np.float32(np.log(classes)), 0.0, 1.0)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 1 when the two best classes tie."""
    classes = probabilities.shape[0]
    top_two = np.partition(probabilities, classes - 2, axis=0)[classes - 2:]
    return np.clip(1.0 - (top_two[1] - top_two[0]), 0.0, 1.0)


def least_confidence(probabilities: np.ndarray) -> np.ndarray:
    """(1 - p1) * C / (C - 1): 1 for a uniform prediction."""
    classes = probabilities.shape[0]
    return np.clip((1.0 - probabilities.max(axis=0)) * (classes / (classes - 1)), 0.0, 1.0)


UNCERTAINTY_MEASURES: dict[str, UncertaintyMeasure] = {
    "entropy": normalized_entropy,
    "margin": margin,
    "least_confidence": least_confidence,
}
DEFAULT_MEASURE = "entropy"


def get_measure(name: str) -> UncertaintyMeasure:
    try:
        return UNCERTAINTY_MEASURES[name]
    except KeyError:
        raise ValueError(f"unknown uncertainty measure {name!r}; choose one of {sorted(UNCERTAINTY_MEASURES)}") from None
