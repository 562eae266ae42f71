"""Dynamic batching: one worker per model gathers requests into one forward pass.

Requests whose padded sizes match share a batch, up to ``max_batch_size`` or until the first of
them has waited ``max_queue_delay``. Images that need tiling are not queued: their caller takes the model for itself (``exclusive``)
and streams tiles through it. The queue is bounded:
when full, a request is refused at once rather than queued without limit. Requests whose caller
has gone (deadline passed, cancelled) are dropped before inference. One worker per model also
means concurrent requests never oversubscribe the cores with parallel forward passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from prelabel_models.postprocessing import MapRequest, SegmentationMaps
from prelabel_models.predictor import Predictor
from prelabel_proto.errors import Cancelled, ModelUnavailable, ResourceExhausted
from prelabel_server import metrics

log = logging.getLogger(__name__)

CallerGone = Callable[[], bool]


class ModelRetired(ModelUnavailable):
    """The batcher's model was replaced (hot reload) or the server is stopping: ask the registry
    for the current model and submit there."""


@dataclass(frozen=True)
class BatchedOutput:
    """One image's share of a forward pass: its maps where the backend computes them on its
    device, else its logits (the caller's thread then derives the maps on the host)."""

    logits: np.ndarray | None
    maps: SegmentationMaps | None
    batch_size: int
    queue_ms: float = 0.0  # set by the batcher


def caller_left(when: str) -> Cancelled:
    """How a request ends whose caller went away (deadline passed or cancelled): CANCELLED."""
    return Cancelled(f"the caller went away (deadline passed or cancelled) {when}")


def prepare(predictor: Predictor, image: np.ndarray, measure: str, keep_probabilities: bool) -> tuple[np.ndarray, MapRequest]:
    """What one image brings to a forward pass: its model input, built on the caller's thread, and
    what its maps need."""
    return predictor.model_input(image), MapRequest(image.shape[0], image.shape[1], measure, keep_probabilities)


def forward(predictor: Predictor, inputs: np.ndarray, requests: list[MapRequest]) -> list[BatchedOutput]:
    """One forward pass over model inputs of one shape (``Predictor.model_input``), with or without
    a batcher."""
    if predictor.maps_on_device:
        return [BatchedOutput(None, maps, len(requests)) for maps in predictor.maps_of_inputs(inputs, requests)]
    sizes = [(request.height, request.width) for request in requests]
    return [BatchedOutput(logits, None, len(requests)) for logits in predictor.logits_of_inputs(inputs, sizes)]


@dataclass(eq=False)  # identity: a generated __eq__ would compare the images element by element
class _Pending:
    model_input: np.ndarray  # only inputs of equal shape share a batch
    request: MapRequest
    caller_gone: CallerGone
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, name: str, predictor: Predictor, max_batch_size: int, max_queue_delay_ms: float,
                 max_queue_size: int) -> None:
        self.name = name
        self._predictor = predictor
        self._max_batch = max_batch_size
        self._max_delay = max_queue_delay_ms / 1000.0
        self._max_queue = max_queue_size
        self._queue: deque[_Pending] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._model_lock = threading.Lock()
        self._large_image_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def submit(self, image: np.ndarray, caller_gone: CallerGone = lambda: False, measure: str = "entropy",
               keep_probabilities: bool = False) -> Future:
        """Queues ``image``; the future resolves to a BatchedOutput (``measure`` and
        ``keep_probabilities`` serve backends that compute maps on their device). Raises
        ResourceExhausted when full. The caller's thread normalises and pads the image first, so
        an image that cannot be normalised fails here, alone. On an H100 the batcher's thread
        spent a fifth of its time doing that for whole batches while the GPU waited (stack
        samples, docs/benchmarks.md)."""
        pending = _Pending(*prepare(self._predictor, image, measure, keep_probabilities), caller_gone)
        with self._wake:
            if self._stopped:
                raise ModelRetired(f"model {self.name!r} was replaced or is stopping: retry")
            if len(self._queue) >= self._max_queue:
                metrics.REJECTED.labels(self.name).inc()
                raise ResourceExhausted(f"model {self.name!r} has {len(self._queue)} requests queued, its limit "
                                        "(PRELABEL_MAX_QUEUE_SIZE): retry later or slow down")
            self._queue.append(pending)
            metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
            self._wake.notify()
        return pending.future

    def exclusive(self) -> threading.Lock:
        """Held while a batch runs; a tiled image holds it for each batch of its tiles, between
        the batcher's batches."""
        return self._model_lock

    def large_image(self) -> threading.Lock:
        """Held for a whole tiled image: one at a time per model, so that their maps (1-2 GB for
        40 megapixels) do not add up, while the batches of small images run between their tiles."""
        return self._large_image_lock

    def queued(self) -> int:
        with self._wake:
            return len(self._queue)

    def stop(self) -> None:
        """Refuses new requests; the worker finishes every queued one, then exits."""
        with self._wake:
            self._stopped = True
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._infer(batch)
            except Exception as exc:  # if this thread died, every later request to the model would wait forever
                log.exception("batch of %d on model %s failed outside the network", len(batch), self.name)
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)

    def _next_batch(self) -> list[_Pending] | None:
        with self._wake:
            while not self._queue:
                if self._stopped:
                    return None
                self._wake.wait()
            first = self._queue.popleft()
            batch = [first]
            flush_at = first.enqueued + self._max_delay
            while len(batch) < self._max_batch:
                self._take_compatible(batch, first.model_input.shape)
                remaining = flush_at - time.perf_counter()
                if len(batch) >= self._max_batch or remaining <= 0:
                    break
                self._wake.wait(remaining)
            metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
            return batch

    def _take_compatible(self, batch: list[_Pending], shape: tuple[int, ...]) -> None:
        """Moves queued requests whose inputs have ``shape`` into ``batch``, keeping the others in order."""
        kept: deque[_Pending] = deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.model_input.shape == shape and len(batch) < self._max_batch:
                batch.append(pending)
            else:
                kept.append(pending)
        self._queue = kept

    def _drop_if_gone(self, pending: _Pending) -> bool:
        if pending.future.cancelled():
            metrics.DROPPED.labels(self.name).inc()
            return True
        if pending.caller_gone():
            metrics.DROPPED.labels(self.name).inc()
            pending.future.set_exception(caller_left("before inference"))
            return True
        return False

    def _infer(self, batch: list[_Pending]) -> None:
        """Runs the batch's requests whose callers are still there, once the model is free. They are
        checked after the wait for the model, not before it: a tiled image may hold the model for
        seconds, and requests whose callers left meanwhile ran anyway, counted as served. Their
        queue time runs to the forward pass, that wait included."""
        with self._model_lock:
            started = time.perf_counter()
            live = [p for p in batch if not self._drop_if_gone(p)]
            if not live:
                return
            try:
                outputs = forward(self._predictor, self._predictor.stack_inputs([p.model_input for p in live]),
                                  [p.request for p in live])
            except Exception as exc:  # a failed batch fails only its own requests
                log.exception("batch of %d on model %s failed", len(live), self.name)
                for pending in live:
                    pending.future.set_exception(exc)
                return
        metrics.BATCH_SIZE.labels(self.name).observe(len(live))
        for pending, output in zip(live, outputs):
            pending.future.set_result(replace(output, queue_ms=(started - pending.enqueued) * 1000.0))
