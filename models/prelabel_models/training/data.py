"""Image/label folders and the augmentation pipeline used for training."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from prelabel_models.card import ModelCard
from prelabel_models.evaluation.metrics import check_label_values
from prelabel_models.image_files import DatasetError, SplitFolders, paired_files, read_labelled, split_folders
from prelabel_models.preprocessing import normalize



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
        self.images, self.labels = [], []
        for image_path, label_path in pairs:  # found here, not as an IndexError deep in an epoch
            image, label = read_labelled(image_path, label_path)
            trainable = label[label != card.ignore_index] if card.ignore_index is not None else label
            try:
                check_label_values(trainable, card.num_classes, card.ignore_index)
            except DatasetError as exc:
                raise DatasetError(f"{label_path}: {exc}") from None
            self.images.append(image)
            self.labels.append(label)
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
