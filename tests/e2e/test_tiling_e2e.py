"""Large images are served as blended tiles: the result has the image's size and no seams."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from prelabel_client import PreLabelClient
from service_support import NUM_CLASSES, encode, read_rgb


def _upscaled(path: Path, width: int, height: int) -> np.ndarray:
    return cv2.resize(read_rgb(path), (width, height), interpolation=cv2.INTER_CUBIC)


def test_tiled_and_untiled_masks_agree(onnx_client: PreLabelClient, camvid_val_images: list[Path]) -> None:
    """``unet`` and ``unet-tile1024`` differ only in tile size: 720x960 is 20 tiles for one, one
    pass for the other. Seams, misplaced tiles or bad blending would show as disagreement."""
    image = encode(_upscaled(camvid_val_images[20], 960, 720))
    tiled = onnx_client.predict(image, model="unet")
    untiled = onnx_client.predict(image, model="unet-tile1024")
    assert (tiled.tiles, untiled.tiles) == (20, 1)  # 736x960 padded, 256-pixel tiles every 192 pixels: 4 x 5
    assert tiled.mask.shape == untiled.mask.shape == (720, 960)
    assert (tiled.mask == untiled.mask).mean() > 0.99
    assert np.abs(tiled.uncertainty - untiled.uncertainty).mean() < 0.01


@pytest.mark.slow
def test_a_4000x3000_photo_is_served_tiled(onnx_client: PreLabelClient, camvid_val_images: list[Path]) -> None:
    photo = encode(_upscaled(camvid_val_images[30], 4000, 3000), ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    prediction = onnx_client.predict(photo, model="unet-tile1024")
    assert prediction.tiles == 20  # 3008x4000 padded, 1024-pixel tiles every 960 pixels: 4 x 5
    assert prediction.mask.shape == prediction.uncertainty.shape == (3000, 4000)
    assert prediction.mask.max() < NUM_CLASSES
    assert 0 <= prediction.uncertainty.min() and prediction.uncertainty.max() <= 1
    fractions = np.bincount(prediction.mask.ravel(), minlength=NUM_CLASSES) / prediction.mask.size
    np.testing.assert_allclose([c.pixel_fraction for c in prediction.summary.classes], fractions, atol=1e-6)


def test_a_strip_lower_than_a_tile_is_tiled_along_its_width(onnx_client: PreLabelClient,
                                                            camvid_val_images: list[Path]) -> None:
    strip = encode(_upscaled(camvid_val_images[40], 1000, 100)[30:78])  # 48x1000: tiles are 64x256
    tiled = onnx_client.predict(strip, model="unet")
    untiled = onnx_client.predict(strip, model="unet-tile1024")
    assert (tiled.tiles, untiled.tiles) == (5, 1)
    assert tiled.mask.shape == untiled.mask.shape == (48, 1000)
    assert (tiled.mask == untiled.mask).mean() > 0.99
