"""A model package on disk: a folder holding ``card.json``, safetensors weights and an ONNX file."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from prelabel_models.card import CARD_FILE, ModelCard, one_line


# In every ONNX graph `prelabel export` writes: the SHA-256 of the weights file it was made from. A
# package whose weights were replaced (fine-tuned, copied over the served folder) and not exported
# again kept serving the old ONNX files under the new card, and a reload said it had worked.
WEIGHTS_DIGEST_KEY = "prelabel.weights_sha256"


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
        except ValidationError as exc:  # also JSON that does not parse
            raise ModelPackageError(f"{folder / CARD_FILE} is invalid: {one_line(exc)}") from exc
        # Not a ValidationError, yet just as much the package's fault: callers (the registry, the
        # repository watcher) only expect ModelPackageError, and anything else escaped them.
        except UnicodeDecodeError as exc:
            raise ModelPackageError(f"{folder / CARD_FILE} is not UTF-8 text ({exc}): save it as UTF-8") from exc
        except OSError as exc:
            raise ModelPackageError(f"{folder / CARD_FILE} cannot be read: {exc}") from exc
        return cls(folder=folder, card=card)

    @property
    def weights_path(self) -> Path:
        return self.folder / self.card.weights

    def weights_digest(self) -> str:
        with self.weights_path.open("rb") as weights:
            return hashlib.file_digest(weights, "sha256").hexdigest()

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.card.onnx

    @property
    def trunk_onnx_path(self) -> Path:
        return self.folder / self.card.trunk_onnx

    @property
    def head_onnx_path(self) -> Path:
        return self.folder / self.card.head_onnx

    def copy_to(self, folder: Path, **card_fields: object) -> "ModelPackage":
        """The same weights and ONNX files in ``folder`` (new) under a card with ``card_fields``
        changed: another name, tile size or batch size for the same network."""
        folder.mkdir(parents=True)
        for path in (self.weights_path, self.onnx_path, self.trunk_onnx_path, self.head_onnx_path):
            if path.is_file():
                shutil.copyfile(path, folder / path.name)
        self.card.model_copy(update=card_fields).save(folder)
        return ModelPackage.open(folder)


def find_packages(repository: Path | str) -> list[Path]:
    """Folders directly inside ``repository`` that hold a model card, sorted by name."""
    root = Path(repository)
    if not root.is_dir():
        raise ModelPackageError(f"model repository {root} is not a folder")
    return sorted(p for p in root.iterdir() if (p / CARD_FILE).is_file())
