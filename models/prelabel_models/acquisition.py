"""Acquisition: image-level scores from per-pixel uncertainty, and strategies that pick which K
images of a pool people should label next.

Scoring an image is kept apart from ranking a pool (as MONAI Label keeps scoring methods apart from
strategies). Scores are pure functions of an image's maps; strategies are looked up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def mean_score(uncertainty: np.ndarray) -> float:
    """Mean per-pixel uncertainty: the image's overall doubt."""
    return float(uncertainty.mean(dtype=np.float64))


def top_fraction_score(uncertainty: np.ndarray, fraction: float = 0.05) -> float:
    """Mean of the ``fraction`` most uncertain pixels: a small unsure object still counts, where the
    whole-image mean would drown it in confident road and sky."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    flat = uncertainty.ravel()
    count = max(1, int(round(flat.size * fraction)))
    return float(np.partition(flat, flat.size - count)[flat.size - count:].mean(dtype=np.float64))


def class_balanced_score(uncertainty: np.ndarray, mask: np.ndarray, class_weights: Sequence[float]) -> float:
    """Uncertainty weighted by the predicted class's weight (rare classes weigh more), averaged."""
    weights = np.asarray(class_weights, dtype=np.float64)
    if mask.max(initial=0) >= len(weights):
        raise ValueError(f"mask has class {int(mask.max())} but only {len(weights)} class weights were given")
    return float((uncertainty * weights[mask]).mean(dtype=np.float64))


def rarity_weights(pixel_fractions: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Class weights (median frequency / frequency) ** power, from class pixel shares in a pool."""
    fractions = np.asarray(pixel_fractions, dtype=np.float64)
    present = fractions > 0
    weights = np.ones_like(fractions)
    weights[present] = (np.median(fractions[present]) / fractions[present]) ** power
    return weights


def k_center_greedy(embeddings: np.ndarray, budget: int, selected: Sequence[int] = ()) -> list[int]:
    """Greedy k-center (Sener & Savarese 2018): repeatedly adds the point farthest from everything
    chosen so far, so the batch covers the embedding space instead of piling on near-duplicates."""
    points = np.asarray(embeddings, dtype=np.float64)
    if budget <= 0 or len(points) == 0:
        return []
    chosen: list[int] = []
    if selected:
        nearest = np.min(_distances(points, points[list(selected)]), axis=1)
        nearest[list(selected)] = -np.inf
    else:
        first = int(np.argmax(np.linalg.norm(points - points.mean(axis=0), axis=1)))
        chosen.append(first)
        nearest = _distances(points, points[[first]])[:, 0]
        nearest[first] = -np.inf
    while len(chosen) < min(budget, len(points) - len(selected)):
        candidate = int(np.argmax(nearest))  # chosen points are at -inf: identical images are still picked once each
        chosen.append(candidate)
        nearest = np.minimum(nearest, _distances(points, points[[candidate]])[:, 0])
        nearest[candidate] = -np.inf
    return chosen


def _distances(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    squared = (points ** 2).sum(1)[:, None] - 2 * points @ centers.T + (centers ** 2).sum(1)[None, :]
    return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class PoolItem:
    """What a strategy knows of one unlabelled image."""

    name: str
    score: float                       # the chosen acquisition score (higher = more worth labelling)
    embedding: np.ndarray | None = None


Strategy = Callable[[Sequence[PoolItem], int, int], list[int]]


def _random(pool: Sequence[PoolItem], budget: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).permutation(len(pool))[:budget].tolist()


def _most_uncertain(pool: Sequence[PoolItem], budget: int, seed: int) -> list[int]:
    return np.argsort([-item.score for item in pool], kind="stable")[:budget].tolist()


def _uncertain_and_diverse(pool: Sequence[PoolItem], budget: int, seed: int, shortlist_factor: int = 3) -> list[int]:
    """The ``shortlist_factor * budget`` most uncertain images, thinned to ``budget`` by k-center
    greedy over their embeddings: informative and varied. Exact copies (one image under several
    names, common in large pools) take one place in the shortlist: in a pool of about 4 copies of
    each frame they crowded it, and 18 of 50 picks were copies of images already picked."""
    if any(item.embedding is None for item in pool):
        raise ValueError("the 'diverse' strategy needs an embedding for every image")
    ranked = _most_uncertain(pool, len(pool), seed)
    shortlist, seen = [], set()
    for index in ranked:
        if len(shortlist) == shortlist_factor * budget:
            break
        key = np.asarray(pool[index].embedding).tobytes()
        if key not in seen:
            seen.add(key)
            shortlist.append(index)
    if len(shortlist) < budget:  # fewer different images than the budget: copies fill it
        listed = set(shortlist)
        shortlist += [index for index in ranked if index not in listed][: budget - len(shortlist)]
    embeddings = np.stack([pool[i].embedding for i in shortlist])
    return [shortlist[i] for i in k_center_greedy(embeddings, budget)]


STRATEGIES: dict[str, Strategy] = {
    "random": _random,
    "uncertainty": _most_uncertain,
    "diverse": _uncertain_and_diverse,
}


def select(pool: Sequence[PoolItem], budget: int, strategy: str, seed: int = 0) -> list[int]:
    """Indices into ``pool`` of the ``budget`` images to label next, best first."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    budget = min(budget, len(pool))
    return STRATEGIES[strategy](pool, budget, seed) if budget else []
