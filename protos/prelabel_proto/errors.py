"""The error vocabulary of prelabel, shared by server and client.

The server raises these and one interceptor turns them into gRPC status codes; the client turns
status codes back into the same classes, so callers catch ``ModelNotFound`` rather than parse
codes. This is the only place where errors and codes are paired.
"""

from __future__ import annotations

import grpc


class PrelabelError(Exception):
    """Base class; ``code`` is the gRPC status it travels as."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def describe(self) -> str:
        """``CODE: message``, as commands, manifests and reports show an error."""
        return f"{self.code.name}: {self.message}"


class InvalidInput(PrelabelError):
    """The request cannot be used as sent (corrupt image, wrong raw shape, unknown option)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(PrelabelError):
    """No model (or no such version) of that name is in the repository."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(PrelabelError):
    """A configured limit was exceeded (message size, pixels) or the server's queue is full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class ModelUnavailable(PrelabelError):
    """The model cannot serve now but may soon: it is being replaced, or the server is stopping
    (a model that failed to load is FailedPrecondition: retrying would not help)."""

    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(PrelabelError):
    """The request is valid but the model cannot do it as deployed (e.g. a missing exported graph)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(PrelabelError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(PrelabelError):
    code = grpc.StatusCode.CANCELLED


class Unauthenticated(PrelabelError):
    code = grpc.StatusCode.UNAUTHENTICATED


class InternalError(PrelabelError):
    """Something unexpected failed inside the server; its log has the details."""

    code = grpc.StatusCode.INTERNAL


_ERROR_BY_CODE: dict[grpc.StatusCode, type[PrelabelError]] = {
    cls.code: cls
    for cls in (InvalidInput, ModelNotFound, ResourceExhausted, ModelUnavailable, FailedPrecondition, DeadlineExceeded,
                Cancelled, Unauthenticated, InternalError)
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_for_code(code: grpc.StatusCode | int, message: str) -> PrelabelError:
    """The exception class that a status code stands for (PrelabelError for codes without one)."""
    if isinstance(code, int):
        code = _CODE_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    error = _ERROR_BY_CODE.get(code, PrelabelError)(message)
    error.code = code
    return error
