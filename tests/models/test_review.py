"""Review regions on a hand-made map: two unsure blobs and a speck."""

from __future__ import annotations

import numpy as np

from prelabel_models.review import review_regions


def test_regions_are_found_filtered_and_ordered_by_expected_errors():
    uncertainty = np.zeros((100, 100), np.float32)
    confidence = np.ones((100, 100), np.float32)
    mask = np.zeros((100, 100), np.uint8)
    uncertainty[10:20, 10:30] = 0.9          # 200 px, confidence 0.6 -> 80 expected errors
    confidence[10:20, 10:30] = 0.6
    mask[10:20, 20:30] = 3                   # two classes meet inside it: 0 and 3
    uncertainty[50:80, 50:80] = 0.7          # 900 px, confidence 0.8 -> 180 expected errors
    confidence[50:80, 50:80] = 0.8
    mask[50:80, 50:80] = 5
    uncertainty[90:92, 90:92] = 1.0          # a 4-px speck: dropped
    regions = review_regions(uncertainty, confidence, mask, threshold=0.5, min_area=16)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [(50, 50, 30, 30, 900), (10, 10, 20, 10, 200)]
    assert abs(regions[0].expected_errors - 180) < 1e-3
    assert abs(regions[1].expected_errors - 80) < 1e-3
    assert abs(regions[0].mean_uncertainty - 0.7) < 1e-6 and abs(regions[1].mean_uncertainty - 0.9) < 1e-6
    assert regions[0].class_ids == (5,) and set(regions[1].class_ids) == {0, 3}
    xs, ys = zip(*regions[0].polygon)
    assert (min(xs), min(ys), max(xs), max(ys)) == (50, 50, 79, 79)
    assert review_regions(uncertainty, confidence, mask, max_regions=1)[0].area == 900
    assert review_regions(np.zeros((8, 8), np.float32), confidence[:8, :8], mask[:8, :8]) == []


def test_an_uncertain_network_larger_than_a_cell_is_cut_into_pieces_with_their_own_boxes():
    """Class boundaries joined into one region whose box was the whole image."""
    uncertainty = np.zeros((400, 400), np.float32)
    uncertainty[195:205, :] = 0.9            # a cross of uncertain boundaries through the whole image
    uncertainty[:, 195:205] = 0.9
    uncertainty[20:40, 20:40] = 0.9          # and a small blob, left whole
    confidence = np.where(uncertainty > 0, 0.5, 1.0).astype(np.float32)
    mask = np.zeros((400, 400), np.uint8)
    regions = review_regions(uncertainty, confidence, mask, max_regions=100, cell=128)
    assert len(regions) > 4 and all(r.width <= 128 and r.height <= 128 for r in regions)
    assert (20, 20, 20, 20, 400) in [(r.x, r.y, r.width, r.height, r.area) for r in regions]
    cross = 2 * 400 * 10 - 100
    assert cross - 4 * 10 * 2 <= sum(r.area for r in regions) - 400 <= cross  # only the 1-px cut lines are lost
    uncut = review_regions(uncertainty, confidence, mask, max_regions=100, cell=1000)
    assert (uncut[0].width, uncut[0].height) == (400, 400)
