"""The data plane: model lookup, decoding, inference, uncertainty, summaries and encoding.

It imports no grpc, so the CLI and tests use it without a network; the gRPC servicer is a thin
converter around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np

from prelabel_models import parallel
from prelabel_models.acquisition import top_fraction_score
from prelabel_models.epistemic import SAMPLED_MEASURES
from prelabel_models.postprocessing import SegmentationMaps, summarize
from prelabel_models.review import review_regions
from prelabel_models.segments import class_segments
from prelabel_models.uncertainty import UNCERTAINTY_MEASURES
from prelabel_proto.errors import InvalidInput, ModelUnavailable, PrelabelError, ResourceExhausted
from prelabel_server import encoding, metrics
from prelabel_server.batching import CallerGone, ModelRetired
from prelabel_server.imaging import ImageLimits, decode_image, raw_image
from prelabel_server.inference import MapOptions, compute_maps
from prelabel_server.memory import LARGE_BYTES, RequestActivity
from prelabel_server.registry import ModelRegistry, ServedModel
from prelabel_server.settings import ServerSettings
from prelabel_server.types import (
    OUTPUTS,
    EncodedArray,
    ModelStatus,
    ScoreRequest,
    ScoreResult,
    SegmentRequest,
    SegmentResult,
    Timings,
)
from prelabel_server.watcher import RepositoryWatcher

_RETIRED_RETRIES = 3
ResultT = TypeVar("ResultT")


def _never_gone() -> bool:
    return False


class Engine:
    def __init__(self, settings: ServerSettings) -> None:
        # The server sizes its own parallelism (the runtime's threads, the CPU pool); OpenCV's
        # implicit pool would be a third, competing for the same cores: post-processing an image
        # on the pool took 8.0 ms with it and 6.1 ms without (2 cores, measured).
        cv2.setNumThreads(1)
        self.settings = settings
        self.registry = ModelRegistry(settings)
        self._watcher: RepositoryWatcher | None = None
        self.activity = RequestActivity()

    def load_models(self) -> None:
        self.registry.load_all()
        if self.settings.repository_poll_seconds:
            self._watcher = RepositoryWatcher(self.registry, self.settings.model_repository,
                                              self.settings.repository_poll_seconds).start()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in progress; False if some still are after ``timeout``. On
        shutdown gRPC cancels the calls, but their handler threads run on to the next point where
        they check (a tiled image's next band): returning before that let them meet the
        interpreter's exit, which refuses new pool work, and each logged an internal error."""
        return self.activity.wait_idle(timeout)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self.registry.close()

    def segment(self, request: SegmentRequest, caller_gone: CallerGone = _never_gone) -> SegmentResult:
        """Runs one request. ``caller_gone`` lets the batcher drop it if its caller has left."""
        return self._counted(request, lambda: self._validate(request),
                             lambda served: self._segment_on(served, request, caller_gone))

    def score(self, request: ScoreRequest, caller_gone: CallerGone = _never_gone) -> ScoreResult:
        """Acquisition scores (and optionally the embedding) of one pool image; no maps leave."""
        return self._counted(request.segment, lambda: self._validate_score(request),
                             lambda served: self._score_on(served, request, caller_gone))

    def reload(self, name: str) -> tuple[ModelStatus, str]:
        served, previous = self.registry.reload(name)
        return self._status(served, self.registry.default_name), previous

    def _counted(self, request: SegmentRequest, validate: Callable[[], None],
                 run: Callable[[ServedModel], ResultT]) -> ResultT:
        """Validates, then runs on the current model (again if it was replaced meanwhile), and
        records the outcome in the metrics, a refused request's too."""
        started = time.perf_counter()
        label = self.registry.metric_label(request.model)
        try:
            validate()
            with self.activity.request():
                result = self._on_current_model(run, request)
        except PrelabelError as exc:
            self.count_refused(request.model, exc)
            raise
        except Exception:
            metrics.REQUESTS.labels(label, "internal").inc()
            raise
        metrics.REQUESTS.labels(label, "ok").inc()
        metrics.REQUEST_SECONDS.labels(label).observe(time.perf_counter() - started)
        return result

    def count_refused(self, model: str, error: PrelabelError) -> None:
        """Counts a request refused with ``error`` in the request metric, by its model and status;
        the servicer calls it for requests it cannot even convert (an unknown enum value)."""
        metrics.REQUESTS.labels(self.registry.metric_label(model), error.code.name.lower()).inc()

    def _on_current_model(self, run: Callable[[ServedModel], ResultT], request: SegmentRequest) -> ResultT:
        for _ in range(_RETIRED_RETRIES):
            try:
                return run(self.registry.ready(request.model, request.model_version))
            except ModelRetired:
                continue  # replaced while we were on our way: the registry already holds the new one
        raise ModelUnavailable(f"model {request.model!r} kept being replaced: retry")

    def _segment_on(self, served: ServedModel, request: SegmentRequest, caller_gone: CallerGone) -> SegmentResult:
        started = time.perf_counter()
        image = self._decode(request)
        decoded = time.perf_counter()
        self._check_fits(_raw_output_bytes(request, image.shape[:2], served.card.num_classes))
        maps, info = compute_maps(served, image, self._map_options(request), caller_gone)
        fields = self._encode(served, request, maps)
        self._check_fits(sum(len(value.data) for value in fields.values() if isinstance(value, EncodedArray))
                         + sum(len(s.rle_counts) for s in fields.get("class_segments") or ()))
        timings = Timings(decode_ms=(decoded - started) * 1000, inference_ms=info.seconds * 1000,
                          postprocess_ms=(time.perf_counter() - decoded - info.seconds) * 1000,
                          total_ms=(time.perf_counter() - started) * 1000, queue_ms=info.queue_ms)
        return SegmentResult(**fields, timings=timings, tiles=served.predictor.count_tiles(*image.shape[:2]),
                             batch_size=info.batch_size)

    def _score_on(self, served: ServedModel, request: ScoreRequest, caller_gone: CallerGone) -> ScoreResult:
        segment = request.segment
        image = self._decode(segment)
        options = self._map_options(segment, want_embedding=request.return_embedding)
        maps, info = compute_maps(served, image, options, caller_gone)
        card = served.card
        return ScoreResult(
            model=served.name, version=card.version, measure=segment.measure, height=image.shape[0],
            width=image.shape[1], summary=summarize(maps, card.num_classes, segment.uncertainty_threshold),
            class_names=[c.name for c in card.classes], top_fraction=request.top_fraction,
            top_fraction_uncertainty=top_fraction_score(maps.uncertainty, request.top_fraction),
            embedding=info.embedding)

    def _check_fits(self, response_bytes: int) -> None:
        """RESOURCE_EXHAUSTED, counted as such, for a response that cannot fit in one message:
        before inference where the raw outputs alone are over (probabilities of a 4000x3000 image
        are 264 MB: the whole tiled pass ran, 25 s and 1.7 GB, before the refusal), after encoding
        otherwise. The servicer checks the message's exact size too."""
        limit = self.settings.max_message_bytes
        if response_bytes > limit:
            raise ResourceExhausted(f"the response would be at least {response_bytes} bytes, over the server's message "
                                    f"limit of {limit} bytes (PRELABEL_MAX_MESSAGE_BYTES): ask for fewer outputs "
                                    "(probabilities are the largest), a compact format, or a smaller image")

    @staticmethod
    def _map_options(request: SegmentRequest, want_embedding: bool = False) -> MapOptions:
        return MapOptions(measure=request.measure, keep_probabilities="probabilities" in request.outputs,
                          mc_samples=request.mc_samples, mc_seed=request.mc_seed, want_embedding=want_embedding)

    def _validate(self, request: SegmentRequest) -> None:
        self._validate_options(request)
        unknown = set(request.outputs) - set(OUTPUTS)
        if unknown or not request.outputs:
            raise InvalidInput(f"unknown outputs {sorted(unknown)}: choose from {list(OUTPUTS)}")
        if not 1 <= request.max_review_regions <= 100:
            raise InvalidInput(f"max_review_regions must be 1..100, got {request.max_review_regions}")
        encoding.check_format("mask", request.mask_format)
        encoding.check_format("uncertainty", request.uncertainty_format)
        encoding.check_format("probabilities", request.probabilities_format)

    def _validate_score(self, request: ScoreRequest) -> None:
        self._validate_options(request.segment)
        if not 0.0 < request.top_fraction <= 1.0:
            raise InvalidInput(f"top_fraction must be in (0, 1], got {request.top_fraction}")

    @staticmethod
    def _validate_options(request: SegmentRequest) -> None:
        """What the maps themselves depend on; Score checks only these, since it returns no maps
        and its requests' output and format fields are documented as ignored."""
        if request.measure not in UNCERTAINTY_MEASURES and request.measure not in SAMPLED_MEASURES:
            raise InvalidInput(f"unknown uncertainty measure {request.measure!r}: choose from "
                               f"{sorted(UNCERTAINTY_MEASURES) + list(SAMPLED_MEASURES)}")
        if not 0.0 < request.uncertainty_threshold < 1.0:
            raise InvalidInput(f"uncertainty_threshold must be in (0, 1), got {request.uncertainty_threshold}")

    def _decode(self, request: SegmentRequest) -> np.ndarray:
        limits = ImageLimits(self.settings.max_image_pixels, self.settings.max_image_side)
        if isinstance(request.image, bytes):
            image = decode_image(request.image, limits)
            message_bytes = len(request.image)
        else:
            image = raw_image(request.image, limits)
            message_bytes = image.nbytes
        if max(message_bytes, image.nbytes) > LARGE_BYTES:
            self.activity.large()
        return image

    @staticmethod
    def _encode(served: ServedModel, request: SegmentRequest, maps: SegmentationMaps) -> dict:
        """The SegmentResult fields that describe the maps (keyword arguments). The larger arrays are
        encoded on the CPU pool while this thread encodes the mask and summarises, since OpenCV and
        zlib release the GIL: 0.7-1.3 ms sooner than handing the mask to the pool too (measured)."""
        card = served.card
        pending = {}
        if "uncertainty" in request.outputs:
            pending["uncertainty"] = parallel.submit(encoding.encode, "uncertainty", request.uncertainty_format,
                                                     maps.uncertainty)
        if maps.probabilities is not None:
            pending["probabilities"] = parallel.submit(encoding.encode, "probabilities", request.probabilities_format,
                                                       maps.probabilities)
        encoded = {}
        if "mask" in request.outputs:
            encoded["mask"] = encoding.encode("mask", request.mask_format, maps.mask, card.palette)
        described = {}
        if "review_regions" in request.outputs:
            described["review_regions"] = review_regions(maps.uncertainty, maps.confidence, maps.mask,
                                                         request.uncertainty_threshold,
                                                         max_regions=request.max_review_regions)
        summary = summarize(maps, card.num_classes, request.uncertainty_threshold)
        if "class_segments" in request.outputs:
            described["class_segments"] = class_segments(maps.mask, summary.classes)
        encoded.update((output, future.result()) for output, future in pending.items())
        return dict(model=served.name, version=card.version, backend=served.backend, device=served.device,
                    height=int(maps.mask.shape[0]), width=int(maps.mask.shape[1]), summary=summary,
                    measure=request.measure, class_names=[c.name for c in card.classes], **encoded, **described)

    def models(self) -> list[ModelStatus]:
        default = self.registry.default_name
        return [self._status(m, default) for m in self.registry.all()]

    def model(self, name: str) -> ModelStatus:
        return self._status(self.registry.get(name), self.registry.default_name)

    def _status(self, served: ServedModel, default: str) -> ModelStatus:
        return ModelStatus(name=served.name, state=served.state, card=served.card, backend=served.backend,
                           device=served.device, error=served.error, is_default=served.name == default,
                           max_pixels=self.settings.max_image_pixels, degradation=served.degradation)


_RAW_BYTES_PER_VALUE = {"raw_uint8": 1, "raw_float16": 2}


def _raw_output_bytes(request: SegmentRequest, size: tuple[int, int], classes: int) -> int:
    """What the requested raw outputs of an image of ``size`` take, known before inference (an
    encoded PNG's size is not)."""
    pixels = size[0] * size[1]
    per_pixel = {"mask": 1, "uncertainty": 1, "probabilities": classes}
    formats = {"mask": request.mask_format, "uncertainty": request.uncertainty_format,
               "probabilities": request.probabilities_format}
    return sum(pixels * per_pixel[output] * _RAW_BYTES_PER_VALUE.get(formats[output], 0)
               for output in request.outputs if output in formats)
