"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def camvid_root() -> Path:
    """The shared CamVid copy (``../shared/data/camvid`` from the repository root); read, never copied."""
    root = (REPO_ROOT / ".." / "shared" / "data" / "camvid").resolve()
    if not (root / "val").is_dir():
        pytest.skip(f"CamVid is not at {root}")
    return root
