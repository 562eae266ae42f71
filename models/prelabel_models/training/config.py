"""Training configuration, read from a TOML file: the model card template plus the recipe."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prelabel_models.card import ModelCard, one_line


class Recipe(BaseModel):
    """How to train. Defaults are the ones the shipped CamVid model was trained with."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=40, ge=1)
    max_steps_per_epoch: int | None = Field(default=None, ge=1, description="Cap steps (quick runs, tests).")
    batch_size: int = Field(default=8, ge=2, description="At least 2: batch norm cannot train on one image.")
    crop: tuple[int, int] = Field(default=(288, 352), description="Training crop (height, width).")
    scale_range: tuple[float, float] = (0.75, 1.5)
    color_jitter: float = Field(default=0.3, ge=0)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_epochs: float = Field(default=1.0, ge=0)
    class_weighting: Literal["none", "median_frequency", "sqrt_median_frequency"] = "median_frequency"
    dice_weight: float = Field(default=0.5, ge=0)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads on the CPU.")
    val_batch_size: int = Field(default=4, ge=1)
    max_val_images: int | None = Field(default=None, ge=1)
    select_on_val: bool = Field(default=True, description=(
        "Validate every epoch and keep the best epoch. Off: no validation, the last epoch is kept — for "
        "runs whose val split is a test set that must not steer training (the active-learning simulation)."))


class ConfigError(ValueError):
    """A training config that cannot be used: said in one line (exit status 2)."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    card: ModelCard
    recipe: Recipe = Recipe()

    @model_validator(mode="after")
    def _crop_fits_the_network(self) -> "TrainConfig":
        stride = self.card.output_stride
        if any(side <= 0 or side % stride for side in self.recipe.crop):
            raise ValueError(f"recipe.crop {list(self.recipe.crop)} must be positive multiples of the card's "
                             f"output_stride {stride}")
        low, high = self.recipe.scale_range
        if not 0 < low <= high:
            raise ValueError(f"recipe.scale_range {[low, high]} must be two scales with 0 < low <= high")
        return self

    @classmethod
    def load(cls, path: Path | str) -> "TrainConfig":
        try:
            with open(path, "rb") as handle:
                return cls.model_validate(tomllib.load(handle))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(f"{path}: {one_line(exc)}") from None
