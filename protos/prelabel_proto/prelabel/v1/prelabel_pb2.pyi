from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Output(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_UNSPECIFIED: _ClassVar[Output]
    OUTPUT_MASK: _ClassVar[Output]
    OUTPUT_UNCERTAINTY: _ClassVar[Output]
    OUTPUT_PROBABILITIES: _ClassVar[Output]
    OUTPUT_REVIEW_REGIONS: _ClassVar[Output]
    OUTPUT_CLASS_SEGMENTS: _ClassVar[Output]

class UncertaintyMeasure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNCERTAINTY_MEASURE_UNSPECIFIED: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_ENTROPY: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_MARGIN: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_LEAST_CONFIDENCE: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_MC_ENTROPY: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_MUTUAL_INFORMATION: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_MC_VARIANCE: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_TTA_ENTROPY: _ClassVar[UncertaintyMeasure]
    UNCERTAINTY_MEASURE_TTA_DISAGREEMENT: _ClassVar[UncertaintyMeasure]

class ArrayFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARRAY_FORMAT_UNSPECIFIED: _ClassVar[ArrayFormat]
    ARRAY_FORMAT_PNG_UINT8: _ClassVar[ArrayFormat]
    ARRAY_FORMAT_PNG_UINT16: _ClassVar[ArrayFormat]
    ARRAY_FORMAT_RAW_UINT8: _ClassVar[ArrayFormat]
    ARRAY_FORMAT_RAW_FLOAT16: _ClassVar[ArrayFormat]

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
OUTPUT_UNSPECIFIED: Output
OUTPUT_MASK: Output
OUTPUT_UNCERTAINTY: Output
OUTPUT_PROBABILITIES: Output
OUTPUT_REVIEW_REGIONS: Output
OUTPUT_CLASS_SEGMENTS: Output
UNCERTAINTY_MEASURE_UNSPECIFIED: UncertaintyMeasure
UNCERTAINTY_MEASURE_ENTROPY: UncertaintyMeasure
UNCERTAINTY_MEASURE_MARGIN: UncertaintyMeasure
UNCERTAINTY_MEASURE_LEAST_CONFIDENCE: UncertaintyMeasure
UNCERTAINTY_MEASURE_MC_ENTROPY: UncertaintyMeasure
UNCERTAINTY_MEASURE_MUTUAL_INFORMATION: UncertaintyMeasure
UNCERTAINTY_MEASURE_MC_VARIANCE: UncertaintyMeasure
UNCERTAINTY_MEASURE_TTA_ENTROPY: UncertaintyMeasure
UNCERTAINTY_MEASURE_TTA_DISAGREEMENT: UncertaintyMeasure
ARRAY_FORMAT_UNSPECIFIED: ArrayFormat
ARRAY_FORMAT_PNG_UINT8: ArrayFormat
ARRAY_FORMAT_PNG_UINT16: ArrayFormat
ARRAY_FORMAT_RAW_UINT8: ArrayFormat
ARRAY_FORMAT_RAW_FLOAT16: ArrayFormat
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_FAILED: ModelState

class RawImage(_message.Message):
    __slots__ = ("data", "height", "width", "channels")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    height: int
    width: int
    channels: int
    def __init__(self, data: _Optional[bytes] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "model_version", "image", "outputs", "uncertainty_measure", "mask_format", "uncertainty_format", "probabilities_format", "uncertainty_threshold", "mc_samples", "mc_seed", "max_review_regions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_MEASURE_FIELD_NUMBER: _ClassVar[int]
    MASK_FORMAT_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FORMAT_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MC_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MC_SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_REVIEW_REGIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    image: Image
    outputs: _containers.RepeatedScalarFieldContainer[Output]
    uncertainty_measure: UncertaintyMeasure
    mask_format: ArrayFormat
    uncertainty_format: ArrayFormat
    probabilities_format: ArrayFormat
    uncertainty_threshold: float
    mc_samples: int
    mc_seed: int
    max_review_regions: int
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[Output, str]]] = ..., uncertainty_measure: _Optional[_Union[UncertaintyMeasure, str]] = ..., mask_format: _Optional[_Union[ArrayFormat, str]] = ..., uncertainty_format: _Optional[_Union[ArrayFormat, str]] = ..., probabilities_format: _Optional[_Union[ArrayFormat, str]] = ..., uncertainty_threshold: _Optional[float] = ..., mc_samples: _Optional[int] = ..., mc_seed: _Optional[int] = ..., max_review_regions: _Optional[int] = ...) -> None: ...

class ReviewRegion(_message.Message):
    __slots__ = ("x", "y", "width", "height", "polygon", "area", "mean_uncertainty", "expected_errors", "class_ids")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    POLYGON_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    MEAN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    polygon: _containers.RepeatedScalarFieldContainer[int]
    area: int
    mean_uncertainty: float
    expected_errors: float
    class_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., polygon: _Optional[_Iterable[int]] = ..., area: _Optional[int] = ..., mean_uncertainty: _Optional[float] = ..., expected_errors: _Optional[float] = ..., class_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ClassSegment(_message.Message):
    __slots__ = ("class_id", "name", "rle_counts", "area", "x", "y", "width", "height", "score")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RLE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    rle_counts: bytes
    area: int
    x: int
    y: int
    width: int
    height: int
    score: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., rle_counts: _Optional[bytes] = ..., area: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class EncodedArray(_message.Message):
    __slots__ = ("data", "format", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    format: ArrayFormat
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., format: _Optional[_Union[ArrayFormat, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ClassSummary(_message.Message):
    __slots__ = ("class_id", "name", "pixel_fraction", "mean_confidence", "mean_uncertainty")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MEAN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    pixel_fraction: float
    mean_confidence: float
    mean_uncertainty: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., pixel_fraction: _Optional[float] = ..., mean_confidence: _Optional[float] = ..., mean_uncertainty: _Optional[float] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("mean_uncertainty", "uncertain_fraction", "uncertainty_threshold", "classes", "uncertainty_measure")
    MEAN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_MEASURE_FIELD_NUMBER: _ClassVar[int]
    mean_uncertainty: float
    uncertain_fraction: float
    uncertainty_threshold: float
    classes: _containers.RepeatedCompositeFieldContainer[ClassSummary]
    uncertainty_measure: UncertaintyMeasure
    def __init__(self, mean_uncertainty: _Optional[float] = ..., uncertain_fraction: _Optional[float] = ..., uncertainty_threshold: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[ClassSummary, _Mapping]]] = ..., uncertainty_measure: _Optional[_Union[UncertaintyMeasure, str]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("decode_ms", "inference_ms", "postprocess_ms", "total_ms", "queue_ms")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    queue_ms: float
    def __init__(self, decode_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., queue_ms: _Optional[float] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "model_version", "backend", "device", "height", "width", "mask", "uncertainty", "probabilities", "summary", "timings", "tiles", "batch_size", "review_regions", "class_segments")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REGIONS_FIELD_NUMBER: _ClassVar[int]
    CLASS_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    backend: str
    device: str
    height: int
    width: int
    mask: EncodedArray
    uncertainty: EncodedArray
    probabilities: EncodedArray
    summary: Summary
    timings: Timings
    tiles: int
    batch_size: int
    review_regions: _containers.RepeatedCompositeFieldContainer[ReviewRegion]
    class_segments: _containers.RepeatedCompositeFieldContainer[ClassSegment]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., mask: _Optional[_Union[EncodedArray, _Mapping]] = ..., uncertainty: _Optional[_Union[EncodedArray, _Mapping]] = ..., probabilities: _Optional[_Union[EncodedArray, _Mapping]] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., tiles: _Optional[int] = ..., batch_size: _Optional[int] = ..., review_regions: _Optional[_Iterable[_Union[ReviewRegion, _Mapping]]] = ..., class_segments: _Optional[_Iterable[_Union[ClassSegment, _Mapping]]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("id", "request")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: PredictRequest
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[PredictRequest, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    response: PredictResponse
    error: ItemError
    def __init__(self, id: _Optional[str] = ..., response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClassInfo(_message.Message):
    __slots__ = ("id", "name", "color")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    color: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., color: _Optional[_Iterable[int]] = ...) -> None: ...

class InputSpec(_message.Message):
    __slots__ = ("channels", "size_multiple", "tile_size", "tile_overlap", "mean", "std", "max_pixels")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    channels: int
    size_multiple: int
    tile_size: int
    tile_overlap: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    max_pixels: int
    def __init__(self, channels: _Optional[int] = ..., size_multiple: _Optional[int] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., max_pixels: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "description", "architecture", "encoder", "classes", "input", "backend", "device", "state", "error", "temperature", "ignore_index", "is_default", "degradation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    IGNORE_INDEX_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    architecture: str
    encoder: str
    classes: _containers.RepeatedCompositeFieldContainer[ClassInfo]
    input: InputSpec
    backend: str
    device: str
    state: ModelState
    error: str
    temperature: float
    ignore_index: int
    is_default: bool
    degradation: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., architecture: _Optional[str] = ..., encoder: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ClassInfo, _Mapping]]] = ..., input: _Optional[_Union[InputSpec, _Mapping]] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., state: _Optional[_Union[ModelState, str]] = ..., error: _Optional[str] = ..., temperature: _Optional[float] = ..., ignore_index: _Optional[int] = ..., is_default: _Optional[bool] = ..., degradation: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model", "previous_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    previous_version: str
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., previous_version: _Optional[str] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("id", "request", "return_embedding", "top_fraction")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RETURN_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    request: PredictRequest
    return_embedding: bool
    top_fraction: float
    def __init__(self, id: _Optional[str] = ..., request: _Optional[_Union[PredictRequest, _Mapping]] = ..., return_embedding: _Optional[bool] = ..., top_fraction: _Optional[float] = ...) -> None: ...

class ImageScores(_message.Message):
    __slots__ = ("model", "model_version", "uncertainty_measure", "mean_uncertainty", "top_fraction_uncertainty", "top_fraction", "classes", "embedding", "height", "width")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_MEASURE_FIELD_NUMBER: _ClassVar[int]
    MEAN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TOP_FRACTION_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TOP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    uncertainty_measure: UncertaintyMeasure
    mean_uncertainty: float
    top_fraction_uncertainty: float
    top_fraction: float
    classes: _containers.RepeatedCompositeFieldContainer[ClassSummary]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    height: int
    width: int
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., uncertainty_measure: _Optional[_Union[UncertaintyMeasure, str]] = ..., mean_uncertainty: _Optional[float] = ..., top_fraction_uncertainty: _Optional[float] = ..., top_fraction: _Optional[float] = ..., classes: _Optional[_Iterable[_Union[ClassSummary, _Mapping]]] = ..., embedding: _Optional[_Iterable[float]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("id", "scores", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    scores: ImageScores
    error: ItemError
    def __init__(self, id: _Optional[str] = ..., scores: _Optional[_Union[ImageScores, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...
