"""Helpers shared by the service tests (server, client, e2e): names of the test packages and
image encoding."""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_MODEL = "deeplab"  # the first ready package by name is the server's default
READY_MODELS = ("deeplab", "unet", "unet-tile1024")
FAILED_MODELS = ("broken", "broken-card")
NUM_CLASSES = 11


def encode(image: np.ndarray, extension: str = ".png", *params: int) -> bytes:
    """An RGB(A) or grey uint8/uint16 array → the bytes of an image file (OpenCV's encoders)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buffer = cv2.imencode(extension, image, list(params))
    assert ok, f"OpenCV could not encode {extension}"
    return buffer.tobytes()


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
