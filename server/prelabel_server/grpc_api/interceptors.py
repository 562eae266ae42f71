"""Cross-cutting gRPC concerns: the one place errors become status codes, and bearer-token auth."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator

import grpc

from prelabel_proto.errors import PrelabelError

log = logging.getLogger(__name__)

_INTERNAL_MESSAGE = "internal error: the server log has the details"


def _abort_with(context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, PrelabelError):
        context.abort(exc.code, exc.message)
    log.exception("unexpected error while serving a call")
    context.abort(grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE)


def _unary(behaviour: Callable) -> Callable:
    def wrapped(request, context):
        try:
            return behaviour(request, context)
        except Exception as exc:
            if context.code() is not None:  # already aborted by gRPC itself
                raise
            _abort_with(context, exc)
    return wrapped


def _streaming(behaviour: Callable) -> Callable:
    def wrapped(request, context) -> Iterator:
        try:
            yield from behaviour(request, context)
        except Exception as exc:
            if context.code() is not None:
                raise
            _abort_with(context, exc)
    return wrapped


class ErrorInterceptor(grpc.ServerInterceptor):
    """PrelabelError → its status code and message; anything else → INTERNAL, details only in the log."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary))
        if handler.stream_stream:
            return handler._replace(stream_stream=_streaming(handler.stream_stream))
        return handler


class TokenInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call except health and reflection."""

    _OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self._OPEN_PREFIXES):
            return continuation(handler_call_details)
        sent = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = sent.partition(" ")
        # the scheme is case-insensitive (RFC 7235): some gateways and SDKs send "bearer"
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self._expected):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token: send 'authorization: Bearer <token>'")

        if handler is not None and handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(deny) if handler.response_streaming else grpc.stream_unary_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)
