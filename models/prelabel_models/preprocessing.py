"""Image → network input. Pure numpy, shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np

from prelabel_models.card import Normalization


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """HxWxC uint8 → CxHxW float32, scaled to [0, 1] then standardised per channel."""
    scale = 1.0 / (255.0 * np.asarray(normalization.std, dtype=np.float32))
    shift = np.asarray(normalization.mean, dtype=np.float32) / np.asarray(normalization.std, dtype=np.float32)
    standardised = image.astype(np.float32) * scale - shift
    return np.ascontiguousarray(standardised.transpose(2, 0, 1))
