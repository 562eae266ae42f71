"""Image → logits for any image size: pad to the network's stride, tile large images with
blended overlaps. Shared by the server, ``evaluate`` and ``export``'s parity check."""

from __future__ import annotations

import numpy as np

from prelabel_models.backends import Backend
from prelabel_models.card import ModelCard
from prelabel_models.preprocessing import normalize
from prelabel_models.tiling import blend_weights, pad_to_multiple, plan_tiles


class Predictor:
    """Runs one model on whole images. ``tile_batch`` tiles go through the network at once."""

    def __init__(self, card: ModelCard, backend: Backend, tile_batch: int = 4) -> None:
        self.card = card
        self.backend = backend
        self.tile_batch = tile_batch

    def needs_tiling(self, height: int, width: int) -> bool:
        return max(height, width) > self.card.tile_size

    def count_tiles(self, height: int, width: int) -> int:
        if not self.needs_tiling(height, width):
            return 1
        stride = self.card.output_stride
        return len(plan_tiles(-(-height // stride) * stride, -(-width // stride) * stride,
                              self.card.tile_size, self.card.tile_overlap))

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 RGB → (classes, H, W) float32 logits, before temperature."""
        height, width = image.shape[:2]
        if self.needs_tiling(height, width):
            return self._tiled_logits(image)
        return self.logits_batch([image])[0]

    def logits_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over images that fit untiled; they are padded to a common size."""
        stride = self.card.output_stride
        height = max(im.shape[0] for im in images)
        width = max(im.shape[1] for im in images)
        batch = np.stack([self._input(pad_to_common(im, height, width), stride) for im in images])
        logits = self.backend.run(batch)
        return [logits[i, :, : im.shape[0], : im.shape[1]] for i, im in enumerate(images)]

    def _input(self, image: np.ndarray, stride: int) -> np.ndarray:
        return normalize(pad_to_multiple(image, stride), self.card.normalization)

    def _tiled_logits(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        padded = pad_to_multiple(image, self.card.output_stride)
        tiles = plan_tiles(padded.shape[0], padded.shape[1], self.card.tile_size, self.card.tile_overlap)
        accumulated = np.zeros((self.card.num_classes, padded.shape[0], padded.shape[1]), np.float32)
        weight_sum = np.zeros(padded.shape[:2], np.float32)
        for start in range(0, len(tiles), self.tile_batch):
            group = tiles[start: start + self.tile_batch]
            batch = np.stack([normalize(padded[t.rows, t.cols], self.card.normalization) for t in group])
            for tile, tile_logits in zip(group, self.backend.run(batch)):
                weights = blend_weights(tile.height, tile.width, self.card.tile_overlap)
                accumulated[:, tile.rows, tile.cols] += tile_logits * weights
                weight_sum[tile.rows, tile.cols] += weights
        accumulated /= weight_sum
        return accumulated[:, :height, :width]


def pad_to_common(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads (reflecting) to ``height`` x ``width`` so images of different sizes share a batch."""
    if image.shape[:2] == (height, width):
        return image
    widths = [(0, height - image.shape[0]), (0, width - image.shape[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="symmetric")
