"""A model package on disk: a folder holding ``card.json``, safetensors weights and an ONNX file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from prelabel_models.card import CARD_FILE, ModelCard


class ModelPackageError(Exception):
    """A folder is not a usable model package; the message says what to fix."""


@dataclass(frozen=True)
class ModelPackage:
    folder: Path
    card: ModelCard

    @classmethod
    def open(cls, folder: Path | str) -> "ModelPackage":
        folder = Path(folder)
        if not (folder / CARD_FILE).is_file():
            raise ModelPackageError(f"{folder} has no {CARD_FILE}: not a model package")
        try:
            card = ModelCard.load(folder)
        except ValidationError as exc:
            raise ModelPackageError(f"{folder / CARD_FILE} is invalid: {exc}") from exc
        return cls(folder=folder, card=card)

    @property
    def weights_path(self) -> Path:
        return self.folder / self.card.weights

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.card.onnx

    @property
    def trunk_onnx_path(self) -> Path:
        return self.folder / self.card.trunk_onnx

    @property
    def head_onnx_path(self) -> Path:
        return self.folder / self.card.head_onnx


def find_packages(repository: Path | str) -> list[Path]:
    """Folders directly inside ``repository`` that hold a model card, sorted by name."""
    root = Path(repository)
    if not root.is_dir():
        raise ModelPackageError(f"model repository {root} is not a folder")
    return sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file())
