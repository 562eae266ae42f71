"""Reading image and label files and dataset splits (training, evaluation, export checks).

No torch here: `evaluate --backend onnx` reads its data through this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class DatasetError(ValueError):
    """Images or labels that cannot be used as given (unreadable, a label of another size, label
    values that are not classes): the user's to fix, so commands say it in one line."""


def _is_image_file(path: Path) -> bool:
    """A regular file (or a link to one) with an image suffix: a folder or a pipe named like an
    image is not one (a FIFO blocked its reader)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _hidden(name: str) -> bool:
    """A name starting with ".", such as macOS's "._photo.jpg" resource files: not an image of
    the dataset, though named like one."""
    return name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, hidden files left out."""
    return sorted(p for p in Path(folder).iterdir() if not _hidden(p.name) and _is_image_file(p))


def find_images(folder: Path) -> list[Path]:
    """The image files in ``folder`` and in every folder below it, in path order (``list_images``
    at every depth): a dataset is often split into folders by day, camera or scene. Hidden files
    and folders are left out; links to folders are not followed (a link loop would never end)."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if not any(map(_hidden, p.relative_to(folder).parts)) and _is_image_file(p))


def read_image(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """The picture as viewers show it (EXIF orientation applied, as the server does), BGR by default;
    None if it cannot be read. The bytes are read by Python, not by ``cv2.imread``, which crashed
    the process on a file name that is not valid UTF-8."""
    try:
        data = np.fromfile(path, np.uint8)
    except (OSError, ValueError):
        return None
    return cv2.imdecode(data, flags) if data.size else None


def read_rgb(path: Path) -> np.ndarray:
    image = read_image(path)
    if image is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    label = read_image(path, cv2.IMREAD_GRAYSCALE)
    if label is None:
        raise DatasetError(f"cannot read label {path}")
    return label


def read_labelled(image_path: Path, label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image (RGB) and its label, which must be the same size: a mismatch is the data's error."""
    image, label = read_rgb(image_path), read_label(label_path)
    if image.shape[:2] != label.shape:
        raise DatasetError(f"{image_path.name} is {image.shape[1]}x{image.shape[0]} but its label "
                           f"{label_path.name} is {label.shape[1]}x{label.shape[0]}")
    return image, label


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
