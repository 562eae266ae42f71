"""protobuf ⇄ engine types. The only module that knows both."""

from __future__ import annotations

from dataclasses import replace

from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto.errors import InvalidInput
from prelabel_models.postprocessing import MapSummary
from prelabel_models.review import ReviewRegion
from prelabel_models.segments import ClassSegment
from prelabel_server import encoding
from prelabel_server.types import (
    DEFAULT_OUTPUTS,
    EncodedArray,
    ModelStatus,
    RawPixels,
    ScoreRequest,
    ScoreResult,
    SegmentRequest,
    SegmentResult,
)

_OUTPUTS = {pb.OUTPUT_MASK: "mask", pb.OUTPUT_UNCERTAINTY: "uncertainty", pb.OUTPUT_PROBABILITIES: "probabilities",
            pb.OUTPUT_REVIEW_REGIONS: "review_regions", pb.OUTPUT_CLASS_SEGMENTS: "class_segments"}
_MEASURES = {pb.UNCERTAINTY_MEASURE_UNSPECIFIED: "entropy", pb.UNCERTAINTY_MEASURE_ENTROPY: "entropy",
             pb.UNCERTAINTY_MEASURE_MARGIN: "margin", pb.UNCERTAINTY_MEASURE_LEAST_CONFIDENCE: "least_confidence",
             pb.UNCERTAINTY_MEASURE_MC_ENTROPY: "mc_entropy",
             pb.UNCERTAINTY_MEASURE_MUTUAL_INFORMATION: "mutual_information",
             pb.UNCERTAINTY_MEASURE_MC_VARIANCE: "mc_variance", pb.UNCERTAINTY_MEASURE_TTA_ENTROPY: "tta_entropy",
             pb.UNCERTAINTY_MEASURE_TTA_DISAGREEMENT: "tta_disagreement"}
_MEASURE_ENUMS = {name: value for value, name in _MEASURES.items() if value != pb.UNCERTAINTY_MEASURE_UNSPECIFIED}
_FORMATS = {pb.ARRAY_FORMAT_PNG_UINT8: "png_uint8", pb.ARRAY_FORMAT_PNG_UINT16: "png_uint16",
            pb.ARRAY_FORMAT_RAW_UINT8: "raw_uint8", pb.ARRAY_FORMAT_RAW_FLOAT16: "raw_float16"}
_FORMAT_ENUMS = {name: value for value, name in _FORMATS.items()}
_STATES = {"loading": pb.MODEL_STATE_LOADING, "ready": pb.MODEL_STATE_READY, "failed": pb.MODEL_STATE_FAILED}


def _enum_value(table: dict[int, str], value: int, field: str, enum: str) -> str:
    try:
        return table[value]
    except KeyError:
        names = [pb.DESCRIPTOR.enum_types_by_name[enum].values_by_number[v].name for v in table if v]
        raise InvalidInput(f"{field} = {value} is not a known {enum}: use one of {names}") from None


def _format(value: int, default: str, field: str) -> str:
    """The format's name; an unknown value is refused with the formats of that output alone."""
    if value == pb.ARRAY_FORMAT_UNSPECIFIED:
        return default
    output = field.removesuffix("_format")
    if value in _FORMATS:
        encoding.check_format(output, _FORMATS[value])
        return _FORMATS[value]
    offered = {number: name for number, name in _FORMATS.items() if name in encoding.ENCODERS[output]}
    return _enum_value(offered, value, field, "ArrayFormat")


def _outputs(values: list[int]) -> frozenset[str]:
    if not values:
        return DEFAULT_OUTPUTS
    if pb.OUTPUT_UNSPECIFIED in values:
        raise InvalidInput("outputs lists OUTPUT_UNSPECIFIED, which names no output: list the outputs wanted, or "
                           "leave the list empty for the mask and the uncertainty map")
    return frozenset(_enum_value(_OUTPUTS, v, "outputs", "Output") for v in values)


def _image(message: pb.PredictRequest) -> bytes | RawPixels:
    source = message.image.WhichOneof("source")
    if source == "raw":
        raw = message.image.raw
        return RawPixels(raw.data, raw.height, raw.width, raw.channels)
    return message.image.encoded  # unset: empty bytes, refused by the decoder with its message


def segment_request(message: pb.PredictRequest) -> SegmentRequest:
    return replace(
        _map_request(message),
        outputs=_outputs(list(message.outputs)),
        mask_format=_format(message.mask_format, "png_uint8", "mask_format"),
        uncertainty_format=_format(message.uncertainty_format, "png_uint8", "uncertainty_format"),
        probabilities_format=_format(message.probabilities_format, "raw_float16", "probabilities_format"),
        max_review_regions=message.max_review_regions if message.HasField("max_review_regions") else 10,
    )


def _map_request(message: pb.PredictRequest) -> SegmentRequest:
    """The fields the maps depend on; the outputs and their formats keep their defaults (Score
    ignores them, as the .proto says)."""
    return SegmentRequest(
        image=_image(message),
        model=message.model,
        model_version=message.model_version,
        measure=_enum_value(_MEASURES, message.uncertainty_measure, "uncertainty_measure", "UncertaintyMeasure"),
        uncertainty_threshold=message.uncertainty_threshold if message.HasField("uncertainty_threshold") else 0.5,
        mc_samples=message.mc_samples if message.HasField("mc_samples") else 8,
        mc_seed=message.mc_seed,
    )


def score_request(message: pb.ScoreRequest) -> ScoreRequest:
    return ScoreRequest(segment=_map_request(message.request), return_embedding=message.return_embedding,
                        top_fraction=message.top_fraction if message.HasField("top_fraction") else 0.05)


def _class_summaries(summary: MapSummary, names: list[str]) -> list[pb.ClassSummary]:
    return [pb.ClassSummary(class_id=c.class_id, name=names[c.class_id], pixel_fraction=c.pixel_fraction,
                            mean_confidence=c.mean_confidence, mean_uncertainty=c.mean_uncertainty)
            for c in summary.classes]


def image_scores(result: ScoreResult) -> pb.ImageScores:
    return pb.ImageScores(
        model=result.model, model_version=result.version, uncertainty_measure=_MEASURE_ENUMS[result.measure],
        mean_uncertainty=result.summary.mean_uncertainty, top_fraction_uncertainty=result.top_fraction_uncertainty,
        top_fraction=result.top_fraction, classes=_class_summaries(result.summary, result.class_names),
        embedding=result.embedding.tolist() if result.embedding is not None else [],
        height=result.height, width=result.width)


def _review_region(region: ReviewRegion) -> pb.ReviewRegion:
    return pb.ReviewRegion(x=region.x, y=region.y, width=region.width, height=region.height, area=region.area,
                           polygon=[c for point in region.polygon for c in point], class_ids=list(region.class_ids),
                           mean_uncertainty=region.mean_uncertainty, expected_errors=region.expected_errors)


def _class_segment(segment: ClassSegment, class_names: list[str]) -> pb.ClassSegment:
    x, y, width, height = segment.bbox
    return pb.ClassSegment(class_id=segment.class_id, name=class_names[segment.class_id], rle_counts=segment.rle_counts,
                           area=segment.area, x=x, y=y, width=width, height=height, score=segment.score)


def _array(array: EncodedArray | None) -> pb.EncodedArray | None:
    if array is None:
        return None
    return pb.EncodedArray(data=array.data, format=_FORMAT_ENUMS[array.format], shape=list(array.shape))


def predict_response(result: SegmentResult) -> pb.PredictResponse:
    summary = result.summary
    return pb.PredictResponse(
        model=result.model, model_version=result.version, backend=result.backend, device=result.device,
        height=result.height, width=result.width, tiles=result.tiles, batch_size=result.batch_size,
        mask=_array(result.mask), uncertainty=_array(result.uncertainty), probabilities=_array(result.probabilities),
        review_regions=[_review_region(r) for r in result.review_regions or ()],
        class_segments=[_class_segment(s, result.class_names) for s in result.class_segments or ()],
        summary=pb.Summary(
            mean_uncertainty=summary.mean_uncertainty, uncertain_fraction=summary.uncertain_fraction,
            uncertainty_threshold=summary.uncertainty_threshold, uncertainty_measure=_MEASURE_ENUMS[result.measure],
            classes=_class_summaries(summary, result.class_names)),
        timings=pb.Timings(decode_ms=result.timings.decode_ms, inference_ms=result.timings.inference_ms,
                           postprocess_ms=result.timings.postprocess_ms, total_ms=result.timings.total_ms,
                           queue_ms=result.timings.queue_ms),
    )


def model_info(status: ModelStatus) -> pb.ModelInfo:
    info = pb.ModelInfo(name=status.name, state=_STATES[status.state], backend=status.backend, device=status.device,
                        error=status.error, is_default=status.is_default, ignore_index=-1,
                        degradation=status.degradation)
    card = status.card
    if card is not None:
        info.version, info.description = card.version, card.description
        info.architecture, info.encoder, info.temperature = card.architecture, card.encoder, card.temperature
        info.ignore_index = card.ignore_index if card.ignore_index is not None else -1
        info.classes.extend(pb.ClassInfo(id=c.id, name=c.name, color=list(c.color)) for c in card.classes)
        info.input.CopyFrom(pb.InputSpec(
            channels=card.in_channels, size_multiple=card.output_stride, tile_size=card.tile_size,
            tile_overlap=card.tile_overlap, mean=list(card.normalization.mean), std=list(card.normalization.std),
            max_pixels=status.max_pixels))
    return info
