"""Padding and overlapping tiles, so that any image size runs without distorting resizes.

Pure numpy; the predictor composes these with a backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pads an HxWxC image at the bottom and right to sides divisible by ``multiple``.

    Reflection keeps the padded border looking like image content, which changes the logits near
    the edge far less than a constant border would.
    """
    height, width = image.shape[:2]
    pad_h = padded_size(height, multiple) - height
    pad_w = padded_size(width, multiple) - width
    if pad_h == 0 and pad_w == 0:
        return image
    mode = "reflect" if pad_h < height and pad_w < width else "symmetric"
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode=mode)


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile_size`` covering the image, neighbours overlapping by >= ``overlap``."""
    return [
        Tile(top, left, min(tile_size, height), min(tile_size, width))
        for top in _starts(height, tile_size, overlap)
        for left in _starts(width, tile_size, overlap)
    ]


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """A weight map that ramps linearly from near 0 to 1 over ``overlap`` pixels at every edge.

    Summing tiles' logits multiplied by this and dividing by the summed weights cross-fades
    neighbouring tiles, which removes the seams that hard tile borders would leave.
    """
    def ramp(length: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(length, dtype=np.float32)
        position = np.arange(length, dtype=np.float32)
        distance_to_edge = np.minimum(position, length - 1 - position)
        return np.clip((distance_to_edge + 1) / (overlap + 1), 0.0, 1.0).astype(np.float32)

    return np.outer(ramp(height), ramp(width))
