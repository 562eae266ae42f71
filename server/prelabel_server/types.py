"""Typed requests and results of the engine; protobuf stops at the gRPC converters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prelabel_models.card import ModelCard
from prelabel_models.postprocessing import MapSummary
from prelabel_models.review import ReviewRegion
from prelabel_models.segments import ClassSegment

OUTPUTS = ("mask", "uncertainty", "probabilities", "review_regions", "class_segments")
DEFAULT_OUTPUTS = frozenset({"mask", "uncertainty"})


@dataclass(frozen=True)
class RawPixels:
    """An uncompressed uint8 image, row-major height x width x channels."""

    data: bytes
    height: int
    width: int
    channels: int


@dataclass(frozen=True)
class SegmentRequest:
    image: bytes | RawPixels
    model: str = ""
    model_version: str = ""
    outputs: frozenset[str] = DEFAULT_OUTPUTS
    measure: str = "entropy"
    mask_format: str = "png_uint8"
    uncertainty_format: str = "png_uint8"
    probabilities_format: str = "raw_float16"
    uncertainty_threshold: float = 0.5
    mc_samples: int = 8
    mc_seed: int = 0
    max_review_regions: int = 10


@dataclass(frozen=True)
class EncodedArray:
    data: bytes
    format: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Timings:
    decode_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    queue_ms: float = 0.0


@dataclass(frozen=True)
class SegmentResult:
    model: str
    version: str
    backend: str
    device: str
    height: int
    width: int
    summary: MapSummary
    measure: str
    class_names: list[str]
    timings: Timings
    tiles: int
    batch_size: int = 1
    mask: EncodedArray | None = None
    uncertainty: EncodedArray | None = None
    probabilities: EncodedArray | None = None
    review_regions: list[ReviewRegion] | None = None
    class_segments: list[ClassSegment] | None = None


@dataclass(frozen=True)
class ScoreRequest:
    segment: SegmentRequest
    return_embedding: bool = False
    top_fraction: float = 0.05


@dataclass(frozen=True)
class ScoreResult:
    model: str
    version: str
    measure: str
    height: int
    width: int
    summary: MapSummary
    class_names: list[str]
    top_fraction: float
    top_fraction_uncertainty: float
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class ModelStatus:
    """What the server knows of one model package, ready or not."""

    name: str
    state: str                  # "loading" | "ready" | "failed"
    card: ModelCard | None = None  # None when the card itself could not be read
    backend: str = ""
    device: str = ""
    error: str = ""
    is_default: bool = False
    max_pixels: int = 0
    degradation: str = ""       # why it runs below its device; empty when it does not
