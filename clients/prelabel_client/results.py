"""What the client returns: numpy arrays and plain dataclasses decoded from the responses."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto.errors import PrelabelError

_MEASURE_NAMES = {value: name.removeprefix("UNCERTAINTY_MEASURE_").lower()
                  for name, value in pb.UncertaintyMeasure.items()}


@dataclass(frozen=True)
class ClassShare:
    class_id: int
    name: str
    pixel_fraction: float
    mean_confidence: float
    mean_uncertainty: float = 0.0


@dataclass(frozen=True)
class Summary:
    mean_uncertainty: float
    uncertain_fraction: float
    uncertainty_threshold: float
    measure: str
    classes: list[ClassShare]


@dataclass(frozen=True)
class ReviewRegion:
    """An uncertain area to check first (asked for with outputs including "review_regions")."""

    box: tuple[int, int, int, int]        # x, y, width, height
    polygon: list[tuple[int, int]]
    area: int
    mean_uncertainty: float
    expected_errors: float
    class_ids: list[int]


@dataclass(frozen=True)
class ClassSegment:
    """Every pixel of one predicted class as a COCO mask (asked for with outputs including
    "class_segments"): ``rle`` is a COCO segmentation, ready for pycocotools or a COCO file."""

    class_id: int
    name: str
    rle: dict            # {"size": [height, width], "counts": compressed RLE string}
    area: int
    box: tuple[int, int, int, int]  # x, y, width, height
    score: float         # mean top-class probability over its pixels

    def to_mask(self) -> np.ndarray:
        """(H, W) bool: where this class was predicted."""
        return coco_mask.decode({**self.rle, "counts": self.rle["counts"].encode()}).astype(bool)


@dataclass(frozen=True)
class Prediction:
    """One image's pre-annotation. ``mask`` and ``uncertainty`` have the image's height and width.

    The arrays are decoded from ``response`` on first access: a batch job that writes the server's
    PNGs straight to disk, or only reads the summary, never pays for decoding them.
    """

    summary: Summary
    model: str
    model_version: str
    backend: str
    device: str
    timings_ms: dict[str, float]
    tiles: int
    response: pb.PredictResponse
    review_regions: list[ReviewRegion] = field(default_factory=list)
    class_segments: list[ClassSegment] = field(default_factory=list)
    ok: bool = True

    @cached_property
    def mask(self) -> np.ndarray | None:
        """(H, W) uint8 class ids."""
        return decode_array(self.response.mask) if self.response.HasField("mask") else None

    @cached_property
    def uncertainty(self) -> np.ndarray | None:
        """(H, W) float32 in [0, 1]."""
        return _unit_map(self.response.uncertainty) if self.response.HasField("uncertainty") else None

    @cached_property
    def probabilities(self) -> np.ndarray | None:
        """(C, H, W) float32."""
        return _unit_map(self.response.probabilities) if self.response.HasField("probabilities") else None


@dataclass(frozen=True)
class FailedPrediction:
    """Stands in for an item of ``predict_many`` that failed, when asked not to raise.

    ``answered`` is False for an image the stream ended before the server answered: ``error`` is
    then the stream's, and callers say the image was not processed rather than that it failed.
    ``sent`` is False for an image the client refused to send (unreadable, over the message limit):
    its failure says nothing about whether the server took the stream."""

    error: PrelabelError
    ok: bool = False
    answered: bool = True
    sent: bool = True


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    state: str
    backend: str
    device: str
    architecture: str
    encoder: str
    classes: list[tuple[int, str, tuple[int, int, int]]]
    error: str
    is_default: bool
    message: pb.ModelInfo
    degradation: str = ""  # why it runs below its device (e.g. CPU fallback after CUDA OOM); empty if not

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [colour for _, _, colour in self.classes]


def decode_array(array: pb.EncodedArray) -> np.ndarray | None:
    """An EncodedArray → numpy; unit-range formats come back as float32 in [0, 1]."""
    if not array.data:
        return None
    shape = tuple(array.shape)
    if array.format == pb.ARRAY_FORMAT_PNG_UINT8 and len(shape) == 2:
        with Image.open(io.BytesIO(array.data)) as image:
            values = np.asarray(image)  # palette PNGs keep their indices with Pillow
        return values
    if array.format == pb.ARRAY_FORMAT_PNG_UINT16:
        return cv2.imdecode(np.frombuffer(array.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array.format == pb.ARRAY_FORMAT_RAW_UINT8:
        return np.frombuffer(array.data, np.uint8).reshape(shape)
    if array.format == pb.ARRAY_FORMAT_RAW_FLOAT16:
        return np.frombuffer(array.data, "<f2").reshape(shape).astype(np.float32)
    raise ValueError(f"unknown array format {array.format}")


def _unit_map(array: pb.EncodedArray) -> np.ndarray | None:
    values = decode_array(array)
    if values is None:
        return None
    scale = {pb.ARRAY_FORMAT_PNG_UINT8: 255.0, pb.ARRAY_FORMAT_RAW_UINT8: 255.0, pb.ARRAY_FORMAT_PNG_UINT16: 65535.0}
    return values.astype(np.float32) / scale[array.format] if array.format in scale else values


def _class_shares(classes) -> list[ClassShare]:
    return [ClassShare(c.class_id, c.name, c.pixel_fraction, c.mean_confidence, c.mean_uncertainty) for c in classes]


@dataclass(frozen=True)
class ImageScores:
    """An image's acquisition scores from the Score stream."""

    model: str
    model_version: str
    measure: str
    mean_uncertainty: float
    top_fraction_uncertainty: float
    top_fraction: float
    classes: list[ClassShare]
    embedding: np.ndarray | None
    height: int
    width: int
    ok: bool = True


def scores_from_message(message: pb.ImageScores) -> ImageScores:
    return ImageScores(
        model=message.model, model_version=message.model_version,
        measure=_MEASURE_NAMES.get(message.uncertainty_measure, "entropy"),
        mean_uncertainty=message.mean_uncertainty, top_fraction_uncertainty=message.top_fraction_uncertainty,
        top_fraction=message.top_fraction, classes=_class_shares(message.classes),
        embedding=np.asarray(message.embedding, np.float32) if len(message.embedding) else None,
        height=message.height, width=message.width)


def prediction_from_response(response: pb.PredictResponse) -> Prediction:
    s = response.summary
    summary = Summary(s.mean_uncertainty, s.uncertain_fraction, s.uncertainty_threshold,
                      _MEASURE_NAMES.get(s.uncertainty_measure, "entropy"),
                      _class_shares(s.classes))
    timings = response.timings
    return Prediction(
        summary=summary, model=response.model, model_version=response.model_version, backend=response.backend,
        device=response.device, tiles=response.tiles, response=response,
        review_regions=[ReviewRegion((r.x, r.y, r.width, r.height), list(zip(r.polygon[::2], r.polygon[1::2])),
                                     r.area, r.mean_uncertainty, r.expected_errors, list(r.class_ids))
                        for r in response.review_regions],
        class_segments=[ClassSegment(s.class_id, s.name, {"size": [response.height, response.width],
                                                          "counts": s.rle_counts.decode("ascii")},
                                     s.area, (s.x, s.y, s.width, s.height), s.score)
                        for s in response.class_segments],
        timings_ms={"decode": timings.decode_ms, "queue": timings.queue_ms, "inference": timings.inference_ms,
                    "postprocess": timings.postprocess_ms, "total": timings.total_ms},
    )


def model_info_from_message(message: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=message.name, version=message.version, state=pb.ModelState.Name(message.state).removeprefix("MODEL_STATE_").lower(),
        backend=message.backend, device=message.device, architecture=message.architecture, encoder=message.encoder,
        classes=[(c.id, c.name, tuple(c.color)) for c in message.classes], error=message.error,
        is_default=message.is_default, message=message, degradation=message.degradation)
