"""The data plane: model lookup, decoding, inference, uncertainty, summaries and encoding.

It imports no grpc, so the CLI and tests use it without a network; the gRPC servicer is a thin
converter around it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from prelabel_models.epistemic import MC_MEASURES, SAMPLED_MEASURES
from prelabel_models.package import ModelPackageError
from prelabel_models.postprocessing import SegmentationMaps, maps_from_samples, segment_bands, segment_maps, summarize
from prelabel_models.uncertainty import UNCERTAINTY_MEASURES
from prelabel_proto.errors import FailedPrecondition, InvalidInput, ModelUnavailable, PrelabelError
from prelabel_server import encoding, metrics
from prelabel_server.batching import CallerGone, ModelRetired
from prelabel_server.imaging import decode_image, raw_image
from prelabel_server.registry import ModelRegistry, ServedModel
from prelabel_server.settings import ServerSettings
from prelabel_server.types import OUTPUTS, ModelStatus, SegmentRequest, SegmentResult, Timings


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


_RETIRED_RETRIES = 3


@dataclass
class _Inference:
    logits: np.ndarray | None
    batch_size: int = 1
    queue_ms: float = 0.0
    seconds: float = 0.0


def _timed(bands: Iterator[tuple[slice, np.ndarray]], inference: _Inference) -> Iterator[tuple[slice, np.ndarray]]:
    """Counts the time spent producing each band (the network) into ``inference.seconds``."""
    while True:
        started = time.perf_counter()
        band = next(bands, None)
        inference.seconds += time.perf_counter() - started
        if band is None:
            return
        yield band


class Engine:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings)

    def load_models(self) -> None:
        self.registry.load_all()

    def close(self) -> None:
        self.registry.close()

    def segment(self, request: SegmentRequest, caller_gone: CallerGone = lambda: False) -> SegmentResult:
        """Runs one request. ``caller_gone`` lets the batcher drop it if its caller has left."""
        started = time.perf_counter()
        model = self.registry.metric_label(request.model)
        try:
            result = self._segment(request, caller_gone)
        except PrelabelError as exc:
            metrics.REQUESTS.labels(model, exc.code.name.lower()).inc()
            raise
        except Exception:
            metrics.REQUESTS.labels(model, "internal").inc()
            raise
        metrics.REQUESTS.labels(model, "ok").inc()
        metrics.REQUEST_SECONDS.labels(model).observe(time.perf_counter() - started)
        return result

    def _segment(self, request: SegmentRequest, caller_gone: CallerGone) -> SegmentResult:
        self._validate(request)
        for _ in range(_RETIRED_RETRIES):
            try:
                return self._segment_on(self.registry.ready(request.model, request.model_version), request, caller_gone)
            except ModelRetired:
                continue  # replaced while we were on our way: the registry already holds the new one
        raise ModelUnavailable(f"model {request.model!r} kept being replaced: retry")

    def reload(self, name: str) -> tuple[ModelStatus, str]:
        served, previous = self.registry.reload(name)
        return self._status(served, self.registry.default_name), previous

    def _segment_on(self, served: ServedModel, request: SegmentRequest, caller_gone: CallerGone) -> SegmentResult:
        started = time.perf_counter()
        image = self._decode(request)
        decoded = time.perf_counter()
        if request.measure in SAMPLED_MEASURES:
            maps, inference = self._segment_sampled(served, image, request)
        elif served.predictor.needs_tiling(*image.shape[:2]):
            maps, inference = self._segment_tiled(served, image, request)
        else:
            inference = self._infer(served, image, caller_gone)
            maps = segment_maps(inference.logits, served.card.temperature, request.measure,
                                keep_probabilities="probabilities" in request.outputs)
            inference.seconds = time.perf_counter() - decoded
        fields = self._encode(served, request, maps)
        timings = Timings(decode_ms=(decoded - started) * 1000, inference_ms=inference.seconds * 1000,
                          postprocess_ms=(time.perf_counter() - decoded - inference.seconds) * 1000,
                          total_ms=_ms(started), queue_ms=inference.queue_ms)
        return SegmentResult(**fields, timings=timings, tiles=served.predictor.count_tiles(*image.shape[:2]),
                             batch_size=inference.batch_size)

    @staticmethod
    def _infer(served: ServedModel, image: np.ndarray, caller_gone: CallerGone) -> _Inference:
        if served.batcher is None:
            return _Inference(served.predictor.logits(image))
        batched = served.batcher.submit(image, caller_gone).result()
        return _Inference(batched.logits, batch_size=batched.batch_size, queue_ms=batched.queue_ms)

    @staticmethod
    def _segment_tiled(served: ServedModel, image: np.ndarray, request: SegmentRequest) -> tuple[SegmentationMaps, _Inference]:
        """Streams tiles' logits straight into the maps, holding the model between batches."""
        inference = _Inference(None)
        bands = _timed(served.predictor.logit_bands(image), inference)
        lock = served.batcher.exclusive() if served.batcher is not None else contextlib.nullcontext()
        with lock:
            maps = segment_bands(bands, served.card.num_classes, *image.shape[:2], served.card.temperature,
                                 request.measure, keep_probabilities="probabilities" in request.outputs)
        return maps, inference

    @staticmethod
    def _segment_sampled(served: ServedModel, image: np.ndarray, request: SegmentRequest) -> tuple[SegmentationMaps, _Inference]:
        """MC dropout or test-time augmentation: several predictions of one image, run alone."""
        card, predictor = served.card, served.predictor
        height, width = image.shape[:2]
        if predictor.needs_tiling(height, width):
            raise InvalidInput(f"{request.measure} works on images up to {card.tile_size} pixels a side; this one is "
                               f"{width}x{height}: use entropy, margin or least_confidence for large images")
        if request.measure in MC_MEASURES and card.head_dropout <= 0:
            raise InvalidInput(f"model {card.name!r} has no head dropout, so {request.measure} is not available")
        if not 2 <= request.mc_samples <= 64:
            raise InvalidInput(f"mc_samples must be 2..64, got {request.mc_samples}")
        lock = served.batcher.exclusive() if served.batcher is not None else contextlib.nullcontext()
        started = time.perf_counter()
        try:
            with lock:
                if request.measure in MC_MEASURES:
                    samples = predictor.mc_dropout_logits(image, request.mc_samples, request.mc_seed)
                else:
                    samples = predictor.tta_logits(image)
        except ModelPackageError as exc:
            raise FailedPrecondition(str(exc)) from None
        inference = _Inference(None, seconds=time.perf_counter() - started)
        maps = maps_from_samples(samples, card.temperature, request.measure,
                                 keep_probabilities="probabilities" in request.outputs)
        return maps, inference

    def _validate(self, request: SegmentRequest) -> None:
        unknown = set(request.outputs) - set(OUTPUTS)
        if unknown or not request.outputs:
            raise InvalidInput(f"unknown outputs {sorted(unknown)}: choose from {list(OUTPUTS)}")
        if request.measure not in UNCERTAINTY_MEASURES and request.measure not in SAMPLED_MEASURES:
            raise InvalidInput(f"unknown uncertainty measure {request.measure!r}: choose from "
                               f"{sorted(UNCERTAINTY_MEASURES) + list(SAMPLED_MEASURES)}")
        if not 0.0 < request.uncertainty_threshold < 1.0:
            raise InvalidInput(f"uncertainty_threshold must be in (0, 1), got {request.uncertainty_threshold}")
        encoding.check_format("mask", request.mask_format)
        encoding.check_format("uncertainty", request.uncertainty_format)
        encoding.check_format("probabilities", request.probabilities_format)

    def _decode(self, request: SegmentRequest) -> np.ndarray:
        if isinstance(request.image, bytes):
            return decode_image(request.image, self.settings.max_image_pixels)
        return raw_image(request.image, self.settings.max_image_pixels)

    def _encode(self, served: ServedModel, request: SegmentRequest, maps: SegmentationMaps) -> dict:
        card = served.card
        encoded = {}
        if "mask" in request.outputs:
            encoded["mask"] = encoding.encode("mask", request.mask_format, maps.mask, card.palette)
        if "uncertainty" in request.outputs:
            encoded["uncertainty"] = encoding.encode("uncertainty", request.uncertainty_format, maps.uncertainty)
        if maps.probabilities is not None:
            encoded["probabilities"] = encoding.encode("probabilities", request.probabilities_format, maps.probabilities)
        return dict(model=served.name, version=card.version, backend=served.backend, device=served.device,
                    height=int(maps.mask.shape[0]), width=int(maps.mask.shape[1]),
                    summary=summarize(maps, card.num_classes, request.uncertainty_threshold),
                    measure=request.measure, class_names=[c.name for c in card.classes], **encoded)

    def models(self) -> list[ModelStatus]:
        default = self.registry.default_name
        return [self._status(m, default) for m in self.registry.all()]

    def model(self, name: str) -> ModelStatus:
        return self._status(self.registry.get(name), self.registry.default_name)

    def _status(self, served: ServedModel, default: str) -> ModelStatus:
        return ModelStatus(name=served.name, state=served.state, card=served.card, backend=served.backend,
                           device=served.device, error=served.error, is_default=served.name == default,
                           max_pixels=self.settings.max_image_pixels)
