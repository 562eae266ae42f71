"""PrelabelService: each method converts the request, calls the engine, converts the result."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager

import grpc
from google.protobuf.message import Message

from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_proto.errors import PrelabelError, ResourceExhausted
from prelabel_server import metrics
from prelabel_server.engine import Engine
from prelabel_server.grpc_api import converters
from prelabel_server.grpc_api.streaming import ByteBudget, RequestT, ResponseT, process_stream
from prelabel_server.imaging import decoded_bytes

log = logging.getLogger(__name__)

_ENVELOPE_BYTES = 16  # a streamed item's tags and lengths around its id and the checked message


class StreamSlots:
    """The cap on long-lived calls (PredictStream, Score and health Watch). Each holds an RPC
    thread for as long as it is open, so together they may take only some of the threads, and
    single calls and health checks always find one free."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def held(self) -> Iterator[None]:
        """One slot for the block; RESOURCE_EXHAUSTED at once when none is free."""
        if not self._free.acquire(blocking=False):
            metrics.STREAMS_REFUSED.inc()  # batch jobs then wait their turn: the operator's sign to raise the cap
            raise ResourceExhausted(f"{self.limit} streams are already open, the server's limit "
                                    "(PRELABEL_MAX_OPEN_STREAMS), which keeps RPC threads free for single calls: "
                                    "retry when one ends, or send these images over a stream already open")
        metrics.OPEN_STREAMS.inc()
        try:
            yield
        finally:
            metrics.OPEN_STREAMS.dec()
            self._free.release()


def _repeated_id(item_id: str) -> pb.ItemError:
    return pb.ItemError(code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                        message=f"id {item_id!r} is already in flight in this stream: give each request its own id "
                                "(answers may come back out of order)")


def _held_bytes(request: pb.PredictRequest) -> int:
    """What a streamed request holds in the server once read and decoded: its message, and its
    pixels as 8-bit RGB. Counted by message size alone, one stream of 8 PNGs of 150 kB each took
    a server from 0.8 to 2.4 GB."""
    image = request.image
    if image.WhichOneof("source") == "encoded":
        return len(image.encoded) + decoded_bytes(image.encoded)
    return request.ByteSize()


def caller_gone(context: grpc.ServicerContext) -> Callable[[], bool]:
    """True once the client cancelled or its deadline passed."""
    return lambda: not context.is_active() or (context.time_remaining() or 1.0) <= 0


class PrelabelServicer(pb_grpc.PrelabelServiceServicer):
    def __init__(self, engine: Engine, stream_executor: Executor, stream_slots: StreamSlots) -> None:
        self._engine = engine
        self._stream_executor = stream_executor
        self._stream_slots = stream_slots
        limit = engine.settings.max_stream_bytes
        self._stream_budget = ByteBudget(limit) if limit else None

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        response = self._segment(request, caller_gone(context))
        self._check_size(response)
        return response

    def PredictStream(self, request_iterator: Iterator[pb.PredictStreamRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.PredictStreamResponse]:
        gone = caller_gone(context)
        return self._stream(request_iterator, lambda item: self._stream_item(item, gone),
                            lambda item: pb.PredictStreamResponse(id=item.id, error=_repeated_id(item.id)))

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[converters.model_info(s) for s in self._engine.models()],
                                     default_model=self._engine.registry.default_name)

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=converters.model_info(self._engine.model(request.name)))

    def ReloadModel(self, request: pb.ReloadModelRequest, context: grpc.ServicerContext) -> pb.ReloadModelResponse:
        status, previous = self._engine.reload(request.name)
        return pb.ReloadModelResponse(model=converters.model_info(status), previous_version=previous)

    def Score(self, request_iterator: Iterator[pb.ScoreRequest],
              context: grpc.ServicerContext) -> Iterator[pb.ScoreResponse]:
        gone = caller_gone(context)
        return self._stream(request_iterator, lambda item: self._score_item(item, gone),
                            lambda item: pb.ScoreResponse(id=item.id, error=_repeated_id(item.id)))

    def _stream(self, requests: Iterator[RequestT], handle: Callable[[RequestT], ResponseT],
                refuse_repeat: Callable[[RequestT], ResponseT]) -> Iterator[ResponseT]:
        """``handle`` over a stream's items, holding one of the open-stream slots for as long as the
        stream is open; RESOURCE_EXHAUSTED when none is free. An item whose id is already in
        flight gets ``refuse_repeat(item)``."""
        with self._stream_slots.held():
            yield from process_stream(requests, handle, self._stream_executor,
                                      self._engine.settings.max_in_flight_per_stream,
                                      item_id=lambda item: item.id, refuse_repeat=refuse_repeat,
                                      budget=self._stream_budget, size_of=lambda item: _held_bytes(item.request))

    def _stream_item(self, item: pb.PredictStreamRequest, gone: Callable[[], bool]) -> pb.PredictStreamResponse:
        """One streamed item; its failure becomes its own error response, never the stream's."""
        outcome = self._item_outcome(lambda: self._segment(item.request, gone), item.id)
        if isinstance(outcome, pb.ItemError):
            return pb.PredictStreamResponse(id=item.id, error=outcome)
        return pb.PredictStreamResponse(id=item.id, response=outcome)

    def _score_item(self, item: pb.ScoreRequest, gone: Callable[[], bool]) -> pb.ScoreResponse:
        outcome = self._item_outcome(lambda: self._score(item, gone), item.id)
        if isinstance(outcome, pb.ItemError):
            return pb.ScoreResponse(id=item.id, error=outcome)
        return pb.ScoreResponse(id=item.id, scores=outcome)

    def _segment(self, request: pb.PredictRequest, gone: Callable[[], bool]) -> pb.PredictResponse:
        converted = self._converted(converters.segment_request, request, request.model)
        return converters.predict_response(self._engine.segment(converted, gone))

    def _score(self, item: pb.ScoreRequest, gone: Callable[[], bool]) -> pb.ImageScores:
        converted = self._converted(converters.score_request, item, item.request.model)
        return converters.image_scores(self._engine.score(converted, gone))

    def _converted(self, convert: Callable[[Message], RequestT], message: Message, model: str) -> RequestT:
        """``convert(message)``; a request refused already here is counted like one the engine refuses."""
        try:
            return convert(message)
        except PrelabelError as exc:
            self._engine.count_refused(model, exc)
            raise

    def _item_outcome(self, run: Callable[[], Message], item_id: str) -> Message | pb.ItemError:
        """``run()``, or the ItemError it raised; a result too large for one message is an error too."""
        try:
            message = run()
            self._check_size(message, wrapper_bytes=_ENVELOPE_BYTES + len(item_id.encode()))
            return message
        except PrelabelError as exc:
            return pb.ItemError(code=exc.code.value[0], message=exc.message)
        except Exception:
            log.exception("unexpected error on streamed item %r", item_id)
            return pb.ItemError(code=grpc.StatusCode.INTERNAL.value[0],
                                message="internal error: the server log has the details")

    def _check_size(self, message: Message, wrapper_bytes: int = 0) -> None:
        """RESOURCE_EXHAUSTED for a response over the message limit with ``wrapper_bytes`` around it
        (a streamed item's id, which the client chooses, and its tags): gRPC would fail the call."""
        size, limit = message.ByteSize() + wrapper_bytes, self._engine.settings.max_message_bytes
        if size > limit:
            raise ResourceExhausted(f"the response would be {size} bytes, over the server's message limit of {limit} "
                                    "bytes (PRELABEL_MAX_MESSAGE_BYTES): ask for fewer outputs (probabilities are "
                                    "the largest), a compact format, or a smaller image")
