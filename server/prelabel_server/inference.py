"""How one decoded image becomes maps on a served model: through the dynamic batcher, as streamed
tiles, or as several stochastic predictions (MC dropout, test-time augmentation)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from prelabel_models.epistemic import MC_MEASURES, SAMPLED_MEASURES
from prelabel_models.package import ModelPackageError
from prelabel_models.postprocessing import SegmentationMaps, maps_from_statistics, segment_bands, segment_maps
from prelabel_proto.errors import FailedPrecondition, InvalidInput
from prelabel_server.batching import CallerGone, caller_left, forward, prepare
from prelabel_server.registry import ServedModel


@dataclass
class InferenceInfo:
    """What inference cost and how it ran (for timings and debug fields)."""

    seconds: float = 0.0
    batch_size: int = 1
    queue_ms: float = 0.0
    embedding: np.ndarray | None = None


@dataclass(frozen=True)
class MapOptions:
    measure: str
    keep_probabilities: bool = False
    mc_samples: int = 8
    mc_seed: int = 0
    want_embedding: bool = False


def compute_maps(served: ServedModel, image: np.ndarray, options: MapOptions,
                 caller_gone: CallerGone) -> tuple[SegmentationMaps, InferenceInfo]:
    """The maps of ``image`` on ``served``, choosing the path its size and measure need."""
    if options.measure in SAMPLED_MEASURES:
        maps, info = _sampled(served, image, options, caller_gone)
    elif served.predictor.needs_tiling(*image.shape[:2]):
        maps, info = _tiled(served, image, options, caller_gone)
    elif options.want_embedding:
        return _with_embedding(served, image, options, caller_gone)
    else:
        maps, info = _batched(served, image, options, caller_gone)
    if options.want_embedding:
        with _exclusive(served):
            info.embedding = served.predictor.embedding(image)
    return maps, info


def _exclusive(served: ServedModel) -> contextlib.AbstractContextManager:
    """Holds the model between batches (a no-op without batching)."""
    return served.batcher.exclusive() if served.batcher is not None else contextlib.nullcontext()


def _stop_if_gone(caller_gone: CallerGone, when: str) -> None:
    """Raises what the batcher sets for a caller that has gone, so that work nobody waits for does
    not hold the model while the requests behind it wait."""
    if caller_gone():
        raise caller_left(when)


def _maps(served: ServedModel, logits: np.ndarray, options: MapOptions) -> SegmentationMaps:
    return segment_maps(logits, served.card.temperature, options.measure, options.keep_probabilities)


def _batched(served: ServedModel, image: np.ndarray, options: MapOptions,
             caller_gone: CallerGone) -> tuple[SegmentationMaps, InferenceInfo]:
    started = time.perf_counter()
    if served.batcher is None:
        model_input, request = prepare(served.predictor, image, options.measure, options.keep_probabilities)
        output = forward(served.predictor, model_input[None], [request])[0]
    else:
        output = served.batcher.submit(image, caller_gone, options.measure, options.keep_probabilities).result()
    info = InferenceInfo(seconds=time.perf_counter() - started, batch_size=output.batch_size, queue_ms=output.queue_ms)
    return (output.maps if output.maps is not None else _maps(served, output.logits, options)), info


def _with_embedding(served: ServedModel, image: np.ndarray, options: MapOptions,
                    caller_gone: CallerGone) -> tuple[SegmentationMaps, InferenceInfo]:
    """Logits and embedding from one forward pass (pool scoring). One pass cannot be stopped half
    way, so the caller is checked once, after the wait for the model."""
    started = time.perf_counter()
    with _exclusive(served):
        _stop_if_gone(caller_gone, "before inference")
        logits, embedding = served.predictor.logits_and_embedding(image)
    info = InferenceInfo(seconds=time.perf_counter() - started, embedding=embedding)
    return _maps(served, logits, options), info


def _tiled(served: ServedModel, image: np.ndarray, options: MapOptions,
           caller_gone: CallerGone) -> tuple[SegmentationMaps, InferenceInfo]:
    """Streams tiles' logits straight into the maps. The model is held for each batch of tiles, not
    for the whole image: a 40-megapixel image held it for minutes, and small requests behind it
    waited 49 s (median) or ran out of time. Tiled images take turns (``large_image``), so that
    their maps' memory does not add up. The caller is checked before each batch of tiles, so
    one that has gone stops at once instead of at the end of its row of tiles (12-40 s later)."""
    info = InferenceInfo()

    def hold() -> contextlib.AbstractContextManager:
        _stop_if_gone(caller_gone, "during tiled inference")
        return _exclusive(served)

    with served.batcher.large_image() if served.batcher is not None else contextlib.nullcontext():
        bands = _timed(served.predictor.logit_bands(image, hold), info)
        maps = segment_bands(bands, served.card.num_classes, *image.shape[:2], served.card.temperature,
                             options.measure, options.keep_probabilities)
    return maps, info


def _timed(bands: Iterator[tuple[slice, np.ndarray]], info: InferenceInfo) -> Iterator[tuple[slice, np.ndarray]]:
    """Counts the time spent producing each band (the network) into ``info.seconds``."""
    while True:
        started = time.perf_counter()
        band = next(bands, None)
        info.seconds += time.perf_counter() - started
        if band is None:
            return
        yield band


def _sampled(served: ServedModel, image: np.ndarray, options: MapOptions,
             caller_gone: CallerGone) -> tuple[SegmentationMaps, InferenceInfo]:
    """MC dropout or test-time augmentation: several predictions of one image, run alone. They run
    as one block, so the caller is checked once, after the wait for the model."""
    card, predictor = served.card, served.predictor
    height, width = image.shape[:2]
    if predictor.needs_tiling(height, width):
        raise InvalidInput(f"{options.measure} works on images up to {card.tile_size} pixels a side; this one is "
                           f"{width}x{height}: use entropy, margin or least_confidence for large images")
    if options.measure in MC_MEASURES and card.head_dropout <= 0:
        raise InvalidInput(f"model {card.name!r} has no head dropout, so {options.measure} is not available")
    if not 2 <= options.mc_samples <= 64:
        raise InvalidInput(f"mc_samples must be 2..64, got {options.mc_samples}")
    started = time.perf_counter()
    try:
        with _exclusive(served):
            _stop_if_gone(caller_gone, "before inference")
            if options.measure in MC_MEASURES:
                statistics = predictor.mc_dropout_statistics(image, options.mc_samples, options.mc_seed)
            else:
                statistics = predictor.tta_statistics(image)
    except ModelPackageError as exc:
        raise FailedPrecondition(str(exc)) from None
    info = InferenceInfo(seconds=time.perf_counter() - started)
    return maps_from_statistics(statistics, options.measure, options.keep_probabilities), info
