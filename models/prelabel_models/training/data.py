"""Image/label folders and the augmentation pipeline used for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from prelabel_models.card import ModelCard
from prelabel_models.image_files import IMAGE_SUFFIXES, list_images, read_label, read_rgb
from prelabel_models.preprocessing import normalize



@dataclass(frozen=True)
class SplitFolders:
    images: Path
    labels: Path


def split_folders(root: Path, split: str) -> SplitFolders:
    """Finds a split in either CamVid's layout (``train/``, ``trainannot/``) or ``train/{images,labels}/``."""
    root = Path(root)
    layouts = [
        SplitFolders(root / split, root / f"{split}annot"),
        SplitFolders(root / split / "images", root / split / "labels"),
    ]
    for folders in layouts:
        if folders.images.is_dir() and folders.labels.is_dir():
            return folders
    tried = ", ".join(f"{f.images} + {f.labels}" for f in layouts)
    raise FileNotFoundError(f"no '{split}' split under {root}; expected one of: {tried}")


def paired_files(folders: SplitFolders) -> list[tuple[Path, Path]]:
    """(image, label) pairs matched by file stem; a missing label is an error, never skipped."""
    labels = {p.stem: p for p in folders.labels.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    images = list_images(folders.images)
    missing = [p.name for p in images if p.stem not in labels]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images in {folders.images} have no label, e.g. {missing[:3]}")
    if not images:
        raise FileNotFoundError(f"no images in {folders.images}")
    return [(p, labels[p.stem]) for p in images]


def training_augmentation(crop: tuple[int, int], scale_range: tuple[float, float], jitter: float, ignore_index: int) -> A.Compose:
    height, width = crop
    return A.Compose([
        A.RandomScale(scale_limit=(scale_range[0] - 1, scale_range[1] - 1), interpolation=cv2.INTER_LINEAR, p=1.0),
        A.PadIfNeeded(min_height=height, min_width=width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
        A.RandomCrop(height=height, width=width),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 6, p=0.8),
    ])


class SegmentationFolder(Dataset):
    """Holds a split in memory (CamVid train is ~200 MB) so epochs don't re-decode PNGs."""

    def __init__(self, pairs: list[tuple[Path, Path]], card: ModelCard, transform: A.Compose | None = None) -> None:
        self.names = [image.name for image, _ in pairs]
        self.images = [read_rgb(image) for image, _ in pairs]
        self.labels = [read_label(label) for _, label in pairs]
        self.card = card
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.images[index], self.labels[index]
        if self.transform is not None:
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        tensor = torch.from_numpy(normalize(image, self.card.normalization))
        return tensor, torch.from_numpy(label.astype(np.int64))


def class_frequencies(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.float64)
    for label in labels:
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts / counts.sum()
