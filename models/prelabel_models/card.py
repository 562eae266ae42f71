"""The model card: the small, human-readable description that makes a folder a model package.

Everything the server needs to run a model (architecture, encoder, classes and colours,
normalisation, tiling) is declared here, so that the same package works on every backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CARD_FILE = "card.json"


class ClassInfo(BaseModel):
    """One output class of the model."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0, le=254, description="Class id as written in the mask (0..254).")
    name: str = Field(min_length=1)
    color: tuple[int, int, int] = Field(description="RGB colour used in the mask palette and overlays.")

    @field_validator("color")
    @classmethod
    def _color_in_range(cls, color: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in color):
            raise ValueError(f"colour components must be 0..255, got {color}")
        return color


class Normalization(BaseModel):
    """Per-channel normalisation applied to RGB pixels scaled to [0, 1]: (x - mean) / std."""

    model_config = ConfigDict(extra="forbid")

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @field_validator("std")
    @classmethod
    def _positive(cls, std: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < value < float("inf") for value in std):
            raise ValueError(f"std values must be positive and finite (pixels are divided by them), got {list(std)}")
        return std


class ModelCard(BaseModel):
    """Declares a model package. Stored as ``card.json`` beside the weights."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Model name used in requests.")
    version: str = Field(default="1", min_length=1)
    description: str = ""
    architecture: str = Field(description="segmentation-models-pytorch architecture, e.g. 'DeepLabV3Plus', 'Unet'.")
    encoder: str = Field(description="segmentation-models-pytorch encoder name, e.g. 'resnet18'.")
    in_channels: int = Field(default=3, ge=3, le=3, description="3: every input is read, and served, as RGB.")
    classes: list[ClassInfo] = Field(min_length=2)
    ignore_index: int | None = Field(default=None, description="Label value that is never a target nor scored.")
    normalization: Normalization = Normalization()
    output_stride: int = Field(default=32, ge=1, description="Input sides are padded to a multiple of this.")
    tile_size: int = Field(default=512, ge=64, description="Images larger than this (either side) are tiled.")
    tile_overlap: int = Field(default=64, ge=0, description="Overlap between neighbouring tiles, in pixels.")
    temperature: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="Logits are divided by this before softmax.")
    max_batch_size: int = Field(default=4, ge=1, description="Most requests the server batches into one forward pass.")
    max_queue_delay_ms: float = Field(default=0.0, ge=0, description=(
        "Longest a request waits for others to batch with. 0: none, yet requests that queue while a "
        "batch runs still share the next one; a few ms can help a GPU fill its batches."))
    head_dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout before the segmentation head.")
    weights: str = "model.safetensors"
    onnx: str = "model.onnx"
    trunk_onnx: str = Field(default="model.trunk.onnx", description="Encoder + decoder, for MC dropout (written by export).")
    head_onnx: str = Field(default="model.head.onnx", description="Head with an explicit dropout mask input (written by export).")
    provenance: dict[str, Any] = Field(default_factory=dict, description="How it was trained and what it scored.")

    @model_validator(mode="after")
    def _check_consistency(self) -> "ModelCard":
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"class ids must be 0..{len(ids) - 1} in order, got {ids}")
        if self.tile_overlap * 2 >= self.tile_size:
            raise ValueError("tile_overlap must be less than half of tile_size")
        if self.tile_size % self.output_stride:
            raise ValueError(f"tile_size {self.tile_size} must be a multiple of output_stride {self.output_stride}")
        if len(self.normalization.mean) != self.in_channels or len(self.normalization.std) != self.in_channels:
            raise ValueError("normalization mean/std need one value per input channel")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @classmethod
    def load(cls, folder: Path) -> "ModelCard":
        return cls.model_validate_json((Path(folder) / CARD_FILE).read_text())

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


def one_line(error: ValidationError) -> str:
    """pydantic's errors as one line, ``field: problem; ...``, for commands that say what to fix in one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg'].removeprefix('Value error, ')}"
                     for e in error.errors())
