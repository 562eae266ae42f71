"""PrelabelService: each method converts the request, calls the engine, converts the result."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import grpc

from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_proto.errors import PrelabelError
from prelabel_server.engine import Engine
from prelabel_server.grpc_api import converters
from prelabel_server.grpc_api.streaming import process_stream

log = logging.getLogger(__name__)


def caller_gone(context: grpc.ServicerContext) -> Callable[[], bool]:
    """True once the client cancelled or its deadline passed."""
    return lambda: not context.is_active() or (context.time_remaining() or 1.0) <= 0


class PrelabelServicer(pb_grpc.PrelabelServiceServicer):
    def __init__(self, engine: Engine, stream_executor: Executor, max_in_flight: int,
                 on_models_changed: Callable[[], None] = lambda: None) -> None:
        self._engine = engine
        self._on_models_changed = on_models_changed
        self._stream_executor = stream_executor
        self._max_in_flight = max_in_flight

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        return converters.predict_response(
            self._engine.segment(converters.segment_request(request), caller_gone(context)))

    def PredictStream(self, request_iterator: Iterator[pb.PredictStreamRequest],
                      context: grpc.ServicerContext) -> Iterator[pb.PredictStreamResponse]:
        gone = caller_gone(context)
        return process_stream(request_iterator, lambda item: self._stream_item(item, gone),
                              self._stream_executor, self._max_in_flight)

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[converters.model_info(s) for s in self._engine.models()],
                                     default_model=self._engine.registry.default_name)

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.GetModelResponse:
        return pb.GetModelResponse(model=converters.model_info(self._engine.model(request.name)))

    def ReloadModel(self, request: pb.ReloadModelRequest, context: grpc.ServicerContext) -> pb.ReloadModelResponse:
        try:
            status, previous = self._engine.reload(request.name)
        finally:
            self._on_models_changed()
        return pb.ReloadModelResponse(model=converters.model_info(status), previous_version=previous)

    def _stream_item(self, item: pb.PredictStreamRequest, gone: Callable[[], bool]) -> pb.PredictStreamResponse:
        """One streamed item; its failure becomes its own error response, never the stream's."""
        try:
            result = self._engine.segment(converters.segment_request(item.request), gone)
            return pb.PredictStreamResponse(id=item.id, response=converters.predict_response(result))
        except PrelabelError as exc:
            return pb.PredictStreamResponse(id=item.id, error=pb.ItemError(code=exc.code.value[0], message=exc.message))
        except Exception:
            log.exception("unexpected error on streamed item %r", item.id)
            return pb.PredictStreamResponse(id=item.id, error=pb.ItemError(
                code=grpc.StatusCode.INTERNAL.value[0], message="internal error: the server log has the details"))
