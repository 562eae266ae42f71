"""The network input matches the normalisation the model was trained with, for any image shape."""

import numpy as np
import pytest

from prelabel_models.card import Normalization
from prelabel_models.preprocessing import normalize


@pytest.mark.parametrize("shape", [(360, 480, 3), (5, 7, 3), (33, 1, 3)])
def test_normalize_is_scale_then_standardise_channels_first(shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    normalization = Normalization(mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.4))
    expected = (image / 255.0 - np.asarray(normalization.mean)) / np.asarray(normalization.std)
    result = normalize(image, normalization)
    assert result.dtype == np.float32 and result.flags.c_contiguous
    np.testing.assert_allclose(result, expected.transpose(2, 0, 1), atol=1e-5)


def test_normalize_reads_a_strided_view_like_a_copy() -> None:
    image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    view = image[10:50, 20:70]
    np.testing.assert_array_equal(normalize(view, Normalization()), normalize(view.copy(), Normalization()))


def test_normalize_refuses_an_image_with_other_channels_than_the_model() -> None:
    with pytest.raises(ValueError, match="height x width x 3"):
        normalize(np.zeros((8, 8, 2), np.uint8), Normalization())
