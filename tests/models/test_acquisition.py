"""Acquisition scores and strategies on small hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel_models.acquisition import (
    PoolItem,
    class_balanced_score,
    k_center_greedy,
    mean_score,
    rarity_weights,
    select,
    top_fraction_score,
)


def test_mean_and_top_fraction_scores():
    uncertainty = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.2, 1.0]], np.float32)
    assert mean_score(uncertainty) == pytest.approx(0.15)
    assert top_fraction_score(uncertainty, 0.125) == pytest.approx(1.0)     # the single worst pixel
    assert top_fraction_score(uncertainty, 0.25) == pytest.approx(0.6)      # mean of 1.0 and 0.2
    with pytest.raises(ValueError):
        top_fraction_score(uncertainty, 0.0)


def test_class_balanced_score_weights_rare_classes_up():
    uncertainty = np.array([[0.5, 0.5]], np.float32)
    mask = np.array([[0, 1]], np.uint8)
    assert class_balanced_score(uncertainty, mask, [1.0, 3.0]) == pytest.approx((0.5 + 1.5) / 2)
    with pytest.raises(ValueError):
        class_balanced_score(uncertainty, np.array([[0, 2]], np.uint8), [1.0, 3.0])


def test_rarity_weights_are_median_frequency_ratios():
    weights = rarity_weights(np.array([0.5, 0.3, 0.2, 0.0]), power=1.0)
    assert weights.tolist() == pytest.approx([0.6, 1.0, 1.5, 1.0])  # absent class keeps weight 1


def test_k_center_greedy_picks_one_point_per_cluster():
    # Three tight clusters; near-duplicates inside a cluster must not be picked twice.
    clusters = np.array([[0, 0], [0.1, 0], [0, 0.1], [10, 10], [10.1, 10], [0, 20], [0.1, 20]], float)
    chosen = k_center_greedy(clusters, 3)
    assert len(chosen) == 3
    assert {int(clusters[i, 0] > 5) * 2 + int(clusters[i, 1] > 15) for i in chosen} == {0, 1, 2}


def test_k_center_greedy_extends_an_existing_selection():
    points = np.array([[0.0], [1.0], [5.0], [9.0]])
    assert k_center_greedy(points, 1, selected=[0]) == [3]


def test_k_center_greedy_picks_identical_images_once_each():
    """With copies of one image in the pool, every distance to the chosen ones is 0: the argmax
    once fell back on an image already chosen, and the same image filled the whole budget."""
    points = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    for selected in ((), (3,)):
        chosen = k_center_greedy(points, 4 - len(selected), selected=selected)
        assert sorted(chosen + list(selected)) == [0, 1, 2, 3]


def test_diverse_picks_no_copies_while_different_images_remain():
    """Each of 10 frames 4 times in the pool, the copies of the most uncertain frames ranked
    together: the shortlist of 3 x budget held only 32 different images of 150, and 18 of 50
    picks were copies."""
    frames = np.random.default_rng(0).normal(size=(10, 8))
    pool = [PoolItem(f"f{frame}-copy{copy}", 1.0 - frame / 10 - copy / 1000, frames[frame])
            for frame in range(10) for copy in range(4)]
    chosen = select(pool, 5, "diverse")
    assert len(chosen) == 5 and len({pool[i].name.split("-")[0] for i in chosen}) == 5
    everything = select(pool, 12, "diverse")  # more than the 10 different frames: copies fill it
    assert len(set(everything)) == 12 and len({pool[i].name.split("-")[0] for i in everything}) == 10


def test_strategies_rank_and_diversify():
    pool = [PoolItem(f"img{i}", score, np.array([float(i // 2)])) for i, score in enumerate([0.9, 0.8, 0.7, 0.1, 0.6, 0.5])]
    assert select(pool, 2, "uncertainty") == [0, 1]
    diverse = select(pool, 2, "diverse")
    assert len(set(pool[i].embedding[0] for i in diverse)) == 2       # img0 and img1 are duplicates
    assert sorted(select(pool, 6, "random", seed=1)) == list(range(6))
    assert select(pool, 3, "random", seed=1) == select(pool, 3, "random", seed=1)
    with pytest.raises(ValueError, match="choose one of"):
        select(pool, 2, "nope")
