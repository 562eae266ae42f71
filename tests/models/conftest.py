"""Fixtures for model-side tests: a few CamVid images laid out as a dataset, without copying them."""

from __future__ import annotations

from pathlib import Path

import pytest


def _link_split(source: Path, target: Path, split: str, count: int) -> None:
    for folder in (split, f"{split}annot"):
        (target / folder).mkdir(parents=True)
    for image in sorted((source / split).iterdir())[:count]:
        (target / split / image.name).symlink_to(image)
        (target / f"{split}annot" / image.name).symlink_to(source / f"{split}annot" / image.name)


@pytest.fixture(scope="session")
def tiny_camvid(camvid_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CamVid's layout with 4 train and 2 val images, symlinked to the shared copy."""
    root = tmp_path_factory.mktemp("tiny_camvid")
    _link_split(camvid_root, root, "train", 4)
    _link_split(camvid_root, root, "val", 2)
    return root
