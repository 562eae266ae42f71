"""Per-pixel measures: hand-checked values, and the fused ``pixel_maps`` against softmax-then-measure."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel_models.postprocessing import segment_maps
from prelabel_models.uncertainty import UNCERTAINTY_MEASURES, fast_exp, get_measure, pixel_maps, softmax


def test_measures_on_hand_checked_pixels():
    # pixel 0: certain; pixel 1: uniform over 4 classes; pixel 2: two classes tie.
    probabilities = np.array([[1.0, 0.25, 0.5], [0.0, 0.25, 0.5], [0.0, 0.25, 0.0], [0.0, 0.25, 0.0]], np.float32)
    assert get_measure("entropy")(probabilities) == pytest.approx([0.0, 1.0, 0.5], abs=1e-6)
    assert get_measure("margin")(probabilities) == pytest.approx([0.0, 1.0, 1.0])
    assert get_measure("least_confidence")(probabilities) == pytest.approx([0.0, 1.0, 2 / 3])
    with pytest.raises(ValueError, match="choose one of"):
        get_measure("variance")


@pytest.mark.parametrize("measure", sorted(UNCERTAINTY_MEASURES))
@pytest.mark.parametrize("classes", [2, 11, 20])
def test_pixel_maps_match_softmax_then_measure(measure, classes):
    logits = (np.random.default_rng(classes).standard_normal((classes, 37, 53)) * 4).astype(np.float32)
    logits[:, 0, :5] = 3.0  # every class tied: the lowest class id wins, as with argmax
    logits[1, 1, :5] = logits[:, 1, :5].max(axis=0)  # ties between some classes
    reference = softmax(logits, 1.3)
    maps = pixel_maps(logits, 1.3, measure, keep_probabilities=True)
    assert maps.mask.dtype == np.uint8
    assert np.array_equal(maps.mask, reference.argmax(axis=0))
    assert np.allclose(maps.confidence, reference.max(axis=0), atol=1e-6)
    assert np.allclose(maps.uncertainty, get_measure(measure)(reference), atol=1e-5)
    assert np.allclose(maps.probabilities, reference, atol=1e-6)


def test_segment_maps_bands_give_the_same_maps_as_one_pass():
    logits = (np.random.default_rng(0).standard_normal((11, 300, 64)) * 3).astype(np.float32)
    whole, banded = segment_maps(logits, 1.1, band_pixels=10**9), segment_maps(logits, 1.1, band_pixels=7 * 64)
    assert np.array_equal(whole.mask, banded.mask)
    assert np.array_equal(whole.uncertainty, banded.uncertainty)


@pytest.mark.parametrize("shape", [(11, 37, 53), (7,), (3, 1, 5)])
def test_fast_exp_matches_numpy_including_underflow(shape):
    values = (np.random.default_rng(3).standard_normal(shape) * 15).astype(np.float32)
    values.flat[0] = -1e4  # far below float32's range: exactly 0, as numpy gives
    expected = np.exp(values)
    result = fast_exp(values)
    assert result.dtype == np.float32 and result.shape == shape
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=0)
    assert result.flat[0] == 0.0


def test_fast_exp_reads_a_strided_view():
    values = np.random.default_rng(4).standard_normal((4, 20, 30)).astype(np.float32)
    np.testing.assert_allclose(fast_exp(values[:, 5:15, ::2]), np.exp(values[:, 5:15, ::2]), rtol=1e-6)
