"""Review hints and epistemic measures through the real server and client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prelabel_client import InvalidInput, PreLabelClient
from service_support import NUM_CLASSES


def test_review_regions_are_ordered_boxes_inside_the_image(onnx_client: PreLabelClient, camvid_val_images: list[Path]):
    prediction = onnx_client.predict(camvid_val_images[3], outputs=("mask", "uncertainty", "review_regions"),
                                     uncertainty_threshold=0.3, max_review_regions=5)
    regions = prediction.review_regions
    assert 1 <= len(regions) <= 5
    assert [r.expected_errors for r in regions] == sorted((r.expected_errors for r in regions), reverse=True)
    for region in regions:
        x, y, width, height = region.box
        assert 0 <= x and 0 <= y and x + width <= 480 and y + height <= 360 and region.area >= 64
        assert all(x <= px < x + width and y <= py < y + height for px, py in region.polygon)
        inside = prediction.uncertainty[y: y + height, x: x + width]
        assert inside.max() > 0.3 and 0.3 < region.mean_uncertainty <= 1
        assert region.class_ids and max(region.class_ids) < NUM_CLASSES
    assert not onnx_client.predict(camvid_val_images[3]).review_regions  # only when asked for


@pytest.mark.parametrize("measure", ["tta_entropy", "tta_disagreement"])
def test_tta_measures_are_served(onnx_client: PreLabelClient, small_camvid_png: bytes, measure: str):
    prediction = onnx_client.predict(small_camvid_png, measure=measure, uncertainty_format="raw_float16")
    assert prediction.summary.measure == measure
    assert np.isfinite(prediction.uncertainty).all()
    assert 0 <= prediction.uncertainty.min() and prediction.uncertainty.max() <= 1


def test_mc_dropout_needs_a_model_with_head_dropout(onnx_client: PreLabelClient, small_camvid_png: bytes):
    with pytest.raises(InvalidInput, match="no head dropout"):
        onnx_client.predict(small_camvid_png, measure="mutual_information")
