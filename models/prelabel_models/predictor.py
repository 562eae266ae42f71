"""Image → logits for any image size: pad to the network's stride, tile large images with
blended overlaps. Shared by the server, ``evaluate`` and ``export``'s parity check."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from itertools import groupby

import cv2
import numpy as np

from prelabel_models.backends import Backend, release_idle_memory, stack_inputs
from prelabel_models.card import ModelCard
from prelabel_models.epistemic import SampleStatistics, dropout_mask_batches, resize_statistics, sample_statistics
from prelabel_models.postprocessing import MapRequest, SegmentationMaps
from prelabel_models.preprocessing import normalize
from prelabel_models.tiling import Tile, blend_weights, pad_to_multiple, padded_size, plan_tiles


TTA_SCALES = (0.75, 1.0, 1.25)
MC_HEAD_BATCH = 8  # MC-dropout samples per run of the head (mc_dropout_logits)


class Predictor:
    """Runs one model on whole images. ``tile_batch`` tiles go through the network at once;
    ``device_maps`` lets a backend on an accelerator derive the maps there (``maps_on_device``)."""

    def __init__(self, card: ModelCard, backend: Backend, tile_batch: int = 4, device_maps: bool = True) -> None:
        self.card = card
        self.backend = backend
        self.tile_batch = tile_batch
        self.device_maps = device_maps

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
        return self.logits_of_inputs(self._common_batch(images), [image.shape[:2] for image in images])

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 → (C, H', W') float32, normalised and padded to the network's stride.
        Inputs of one shape can share a batch. The server's request threads build their own, so
        that the batcher's one thread only stacks them between forward passes (see batching)."""
        return normalize(pad_to_multiple(image, self.card.output_stride), self.card.normalization)

    def stack_inputs(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Model inputs of one shape as one batch, in the memory the backend copies from fastest."""
        return stack_inputs(self.backend, inputs)

    def logits_of_inputs(self, inputs: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """A batch of model inputs → each image's logits, cropped to its (height, width)."""
        logits = self.backend.run(inputs)
        return [logits[i, :, :height, :width] for i, (height, width) in enumerate(sizes)]

    @property
    def maps_on_device(self) -> bool:
        """Whether the backend derives the maps itself, on its accelerator (``maps_of_inputs``);
        otherwise the caller derives them from ``logits_of_inputs`` on the host."""
        return self.device_maps and getattr(self.backend, "maps_on_device", False)

    def maps_of_inputs(self, inputs: np.ndarray, requests: list[MapRequest]) -> list[SegmentationMaps]:
        """Like ``logits_of_inputs``, but each image's maps, computed where the logits are."""
        return self.backend.run_maps(inputs, self.card.temperature, requests)

    def _common_batch(self, images: list[np.ndarray]) -> np.ndarray:
        height = max(im.shape[0] for im in images)
        width = max(im.shape[1] for im in images)
        return self.stack_inputs([self.model_input(pad_to_common(im, height, width)) for im in images])

    def logits_and_embedding(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits of an untiled image and its embedding (D,), from one forward pass."""
        height, width = image.shape[:2]
        logits, embedding = self.backend.run_with_embedding(self.model_input(image)[None])
        return logits[0, :, :height, :width], embedding[0]

    def embedding(self, image: np.ndarray) -> np.ndarray:
        """The image embedding; an image larger than a tile is shrunk to fit one first (the
        embedding describes the whole scene, so the resize does no harm there)."""
        height, width = image.shape[:2]
        if self.needs_tiling(height, width):
            scale = self.card.tile_size / max(height, width)
            image = cv2.resize(image, (max(1, int(width * scale)), max(1, int(height * scale))), interpolation=cv2.INTER_AREA)
        return self.logits_and_embedding(image)[1]

    def mc_dropout_logits(self, image: np.ndarray, samples: int, seed: int = 0) -> np.ndarray:
        """(samples, classes, h, w) logits of MC-dropout samples of the stride-padded image, at the
        head's own resolution (a quarter of the image's on DeepLabV3+). The encoder and decoder run
        once; only the head runs per sample, with explicit dropout masks (same seed, same samples).

        The head runs ``MC_HEAD_BATCH`` samples at a time: its masks and masked features take the
        decoder's features' size per sample (11 MB at 360x480, 17 MB at 512x512), and 64 samples at
        once took a server to 5.3 GB (measured)."""
        if self.card.head_dropout <= 0:
            raise ValueError(f"model {self.card.name!r} has no head dropout (head_dropout = 0): MC dropout needs it")
        features = self.backend.features(self.model_input(image)[None])
        batches = dropout_mask_batches(samples, features.shape[1:], self.card.head_dropout, seed, MC_HEAD_BATCH)
        logits = np.concatenate([self.backend.head(features, masks) for masks in batches])
        if samples > MC_HEAD_BATCH:
            release_idle_memory(self.backend)
        return logits

    def mc_dropout_statistics(self, image: np.ndarray, samples: int, seed: int = 0) -> SampleStatistics:
        """MC-dropout statistics at the image's size: reduced at the head's resolution, then upsampled."""
        statistics = sample_statistics(self.mc_dropout_logits(image, samples, seed), self.card.temperature)
        height, width = image.shape[:2]
        stride = self.card.output_stride
        return resize_statistics(statistics, (padded_size(height, stride), padded_size(width, stride)), (height, width))

    def tta_statistics(self, image: np.ndarray, scales: tuple[float, ...] = TTA_SCALES) -> SampleStatistics:
        logits = self.tta_logits(image, scales)
        release_idle_memory(self.backend)  # its scaled pairs left a server 234-304 MB larger (measured)
        return sample_statistics(logits, self.card.temperature)

    def tta_logits(self, image: np.ndarray, scales: tuple[float, ...] = TTA_SCALES) -> np.ndarray:
        """(2 x len(scales), classes, H, W): each scale, plain and mirrored, mapped back to the image."""
        height, width = image.shape[:2]
        outputs = []
        for scale in scales:
            scaled = image if scale == 1 else cv2.resize(image, (round(width * scale), round(height * scale)),
                                                         interpolation=cv2.INTER_LINEAR)
            plain, mirrored = self.logits_batch([scaled, np.ascontiguousarray(scaled[:, ::-1])])
            for logits in (plain, mirrored[:, :, ::-1]):
                outputs.append(logits if scale == 1 else _resize_logits(logits, height, width))
        return np.stack(outputs)

    def logit_bands(self, image: np.ndarray, hold: Callable[[], AbstractContextManager] = nullcontext
                    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Logits as bands of finished rows, top to bottom: (rows, (classes, band height, W)).

        Tiles are processed one row of tiles at a time and the rows that no later tile touches are
        handed out at once, so a 4000x3000 photo never holds more than about two tile-heights of
        logits. Each batch of tiles runs inside ``hold()`` (a server holds its model there).
        """
        height, width = image.shape[:2]
        if not self.needs_tiling(height, width):
            yield slice(0, height), self.logits_batch([image])[0]
            return
        padded = pad_to_multiple(image, self.card.output_stride)
        tiles = plan_tiles(padded.shape[0], padded.shape[1], self.card.tile_size, self.card.tile_overlap)
        band = _Band(self.card.num_classes, padded.shape[1])
        try:
            for top, row_tiles in groupby(tiles, key=lambda t: t.top):
                yield from band.finish_rows_above(top, height, width)
                band.extend_to(min(top + self.card.tile_size, padded.shape[0]))  # never past the image
                row_tiles = list(row_tiles)
                for start in range(0, len(row_tiles), self.tile_batch):
                    group = row_tiles[start: start + self.tile_batch]
                    batch = self.stack_inputs([normalize(padded[t.rows, t.cols], self.card.normalization)
                                               for t in group])
                    with hold():
                        logits = self.backend.run(batch)
                    for tile, tile_logits in zip(group, logits):
                        band.add(tile, tile_logits, blend_weights(tile.height, tile.width, self.card.tile_overlap))
        finally:  # also when the caller stops early (it left): a server kept 1 GB after such a photo
            release_idle_memory(self.backend)
        yield from band.finish_rows_above(padded.shape[0], height, width)

    def _tiled_logits(self, image: np.ndarray) -> np.ndarray:
        return np.concatenate([logits for _, logits in self.logit_bands(image)], axis=1)


class _Band:
    """The rows of blended logits still being written by tiles, starting at image row ``top``."""

    def __init__(self, num_classes: int, width: int) -> None:
        self.top = 0
        self.logits = np.zeros((num_classes, 0, width), np.float32)
        self.weights = np.zeros((0, width), np.float32)

    def extend_to(self, bottom: int) -> None:
        missing = bottom - (self.top + self.weights.shape[0])
        if missing > 0:
            classes, _, width = self.logits.shape
            self.logits = np.concatenate([self.logits, np.zeros((classes, missing, width), np.float32)], axis=1)
            self.weights = np.concatenate([self.weights, np.zeros((missing, width), np.float32)], axis=0)

    def add(self, tile: Tile, tile_logits: np.ndarray, weights: np.ndarray) -> None:
        rows = slice(tile.top - self.top, tile.top - self.top + tile.height)
        self.logits[:, rows, tile.cols] += tile_logits * weights
        self.weights[rows, tile.cols] += weights

    def finish_rows_above(self, row: int, height: int, width: int) -> Iterator[tuple[slice, np.ndarray]]:
        """Hands out rows [top, row) — cropped to the image — and forgets them."""
        done = min(row, self.top + self.weights.shape[0]) - self.top
        if done <= 0:
            return
        visible = max(0, min(height, self.top + done) - self.top)
        if visible:
            yield slice(self.top, self.top + visible), self.logits[:, :visible, :width] / self.weights[:visible, :width]
        self.logits, self.weights = self.logits[:, done:], self.weights[done:]
        self.top += done


def _resize_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    channels_last = np.ascontiguousarray(logits.transpose(1, 2, 0))
    resized = cv2.resize(channels_last, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, -1).transpose(2, 0, 1)


def pad_to_common(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads (reflecting) to ``height`` x ``width`` so images of different sizes share a batch."""
    if image.shape[:2] == (height, width):
        return image
    widths = [(0, height - image.shape[0]), (0, width - image.shape[1])] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, widths, mode="symmetric")
