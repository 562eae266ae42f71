"""What ``evaluate`` and ``calibrate`` share: a package opened on a backend behind the server's
:class:`Predictor`, and the labelled images of one split, read one at a time with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from prelabel_models.backends import create_backend
from prelabel_models.image_files import read_labelled
from prelabel_models.package import ModelPackage
from prelabel_models.predictor import Predictor
from prelabel_models.image_files import paired_files, split_folders


def open_predictor(folder: Path | str, backend: str = "torch", threads: int | None = None) -> Predictor:
    """The package at ``folder`` on ``backend`` (``torch``, ``onnx`` or ``auto``), as the server runs it."""
    package = ModelPackage.open(folder)
    options = {"threads": threads} if threads else {}
    return Predictor(package.card, create_backend(backend, package, **options))


def split_pairs(data: Path | str, split: str) -> list[tuple[Path, Path]]:
    """(image, label) paths of ``split`` under ``data``, sorted by name so every run sees one order."""
    return paired_files(split_folders(Path(data), split))


def labelled_logits(predictor: Predictor, pairs: list[tuple[Path, Path]],
                    description: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(logits before temperature (C, H, W), label (H, W)) for each pair, one image in memory at a time."""
    for image_path, label_path in tqdm(pairs, desc=description, unit="image", mininterval=2):
        image, label = read_labelled(image_path, label_path)
        yield predictor.logits(image), label
