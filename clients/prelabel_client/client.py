"""PreLabelClient: the Python client of prelabel's gRPC API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar, Union

import grpc
import numpy as np
from google.protobuf.message import EncodeError, Message

from prelabel_client.results import (
    FailedPrediction,
    ImageScores,
    ModelInfo,
    Prediction,
    model_info_from_message,
    prediction_from_response,
    scores_from_message,
)
from prelabel_proto import SERVICE_NAME
from prelabel_proto import prelabel_pb2 as pb
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_proto.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PrelabelError,
    ResourceExhausted,
    error_for_code,
)

ImageInput = Union[str, Path, bytes, np.ndarray]
ResultT = TypeVar("ResultT")

_OUTPUT_ENUMS = {"mask": pb.OUTPUT_MASK, "uncertainty": pb.OUTPUT_UNCERTAINTY, "probabilities": pb.OUTPUT_PROBABILITIES,
                 "review_regions": pb.OUTPUT_REVIEW_REGIONS, "class_segments": pb.OUTPUT_CLASS_SEGMENTS}
_MEASURE_ENUMS = {name.removeprefix("UNCERTAINTY_MEASURE_").lower(): value
                  for name, value in pb.UncertaintyMeasure.items() if value != pb.UNCERTAINTY_MEASURE_UNSPECIFIED}
_MASK_FORMATS = {"png_uint8": pb.ARRAY_FORMAT_PNG_UINT8, "raw_uint8": pb.ARRAY_FORMAT_RAW_UINT8}
_UNCERTAINTY_FORMATS = {"png_uint8": pb.ARRAY_FORMAT_PNG_UINT8, "png_uint16": pb.ARRAY_FORMAT_PNG_UINT16,
                        "raw_float16": pb.ARRAY_FORMAT_RAW_FLOAT16}
_PROBABILITIES_FORMATS = {"raw_float16": pb.ARRAY_FORMAT_RAW_FLOAT16, "raw_uint8": pb.ARRAY_FORMAT_RAW_UINT8}


# What gRPC's server answers, by itself, to a call over its concurrent-call limit.
_GRPC_CALL_LIMIT = "Concurrent RPC limit exceeded!"
_GRPC_SIZE_LIMIT = "larger than max"  # "Received message larger than max (N vs. M)", from either side


def _error_from(exc: grpc.RpcError, timeout: float | None = None) -> PrelabelError:
    """The PrelabelError for a failed call. gRPC's own messages for its limits (calls, message
    size, deadline) say nothing of what to do, so they get the setting and the remedy added."""
    details, code = exc.details() or "", exc.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details == _GRPC_CALL_LIMIT:
        details = (f"{details} The server already holds as many calls as it admits (its setting "
                   "PRELABEL_MAX_CONCURRENT_RPCS): retry later, or send fewer calls at once")
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and _GRPC_SIZE_LIMIT in details:
        details = f"{details}. {_size_limit_remedy(details)}"
    elif code == grpc.StatusCode.UNAVAILABLE and details.endswith("Socket closed"):  # all a plaintext call to TLS hears
        details = (f"{details} (if the server speaks TLS, connect with TLS: PreLabelClient(tls=True) or "
                   "root_certificates=..., --tls or --root-certificates on the command line)")
    elif code == grpc.StatusCode.UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in details:
        details = (f"{details} (the server's certificate is not signed by an authority this client trusts: pass "
                   "the certificate that signed it, PreLabelClient(root_certificates=...) or --root-certificates)")
    elif code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        details = (f"{details} (no server answered there: is `prelabel serve` running at that address and port? "
                   "The command line takes it from --server or PRELABEL_SERVER)")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        details = f"{details} (PreLabelClient(token=...); on the command line --token or PRELABEL_TOKEN)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded" and timeout:
        details = (f"no answer within the call's timeout of {timeout:g} s: raise it (PreLabelClient(timeout=...) "
                   "or the call's timeout=...); large images are tiled and take longer")
    return error_for_code(code, details)


def _size_limit_remedy(details: str) -> str:
    """Which limit a message broke, from gRPC's own words, and what to change."""
    if "CLIENT: Received" in details:
        return ("The response was over this client's max_message_bytes: ask for fewer or smaller outputs "
                "(e.g. probabilities as raw_uint8), or raise max_message_bytes up to the server's "
                "PRELABEL_MAX_MESSAGE_BYTES")
    if "CLIENT: Sent" in details:
        return ("The request was over this client's max_message_bytes: send a smaller image, encoded (PNG or "
                "JPEG) rather than as raw pixels, or raise max_message_bytes and the server's "
                "PRELABEL_MAX_MESSAGE_BYTES")
    return ("A message was over the server's size limit (PRELABEL_MAX_MESSAGE_BYTES), which fails the whole "
            "call: raise it, or give PreLabelClient the same max_message_bytes (--max-message-bytes on the "
            "command line), so that predict_many reports such an image alone and goes on")


def _choice(names: dict[str, int], name: str, option: str) -> int:
    """The protocol's enum value of an option given by name; an unknown name is the caller's error."""
    try:
        return names[name]
    except KeyError:
        raise ValueError(f"unknown {option} {name!r}: choose from {sorted(names)}") from None


def _set_number(message: Message, option: str, value: object) -> None:
    """Sets a numeric field; a value its type cannot hold (a negative count) names the option,
    where protobuf's own error ("Value out of range: -1") does not."""
    try:
        setattr(message, option, value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{option} cannot be {value!r}: {exc}") from None


def _check_window(window: int) -> None:
    """A stream with no image allowed in flight would wait for ever: refused before it opens."""
    if window < 1:
        raise ValueError(f"window must be at least 1 (images sent ahead of their results), got {window}")


_RETRIED_METHODS = ("Predict", "ListModels", "GetModel", "ReloadModel")


def _retry_service_config(attempts: int) -> str:
    """gRPC's own retry policy, for single calls only: UNAVAILABLE is retried, with exponential
    back-off. Not for streams: with a retry policy, a stream whose server was stopped while another
    client's call was still running waited for ever in its response iterator (grpcio 1.85); without
    one it ends with UNAVAILABLE."""
    policy = {"maxAttempts": attempts, "initialBackoff": "0.2s", "maxBackoff": "5s", "backoffMultiplier": 2,
              "retryableStatusCodes": ["UNAVAILABLE"]}
    methods = [{"service": SERVICE_NAME, "method": method} for method in _RETRIED_METHODS]
    return json.dumps({"methodConfig": [{"name": methods, "retryPolicy": policy}]})


def image_message(image: ImageInput, max_bytes: int | None = None) -> pb.Image:
    """A path or bytes travel encoded; a numpy array (H, W) or (H, W, 1|3|4), uint8, RGB(A), travels raw.
    A file over ``max_bytes`` is refused before it is read: one of 2 GiB took 4 GB of memory and
    then failed to serialise, which ended a batch job's whole stream."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.exists() and not path.is_file():  # reading a FIFO or a device would block the stream for ever
            raise ValueError(f"{path} is not a regular file (a folder, FIFO, socket or device): give image files")
        if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
            raise over_message_limit(f"{path} is {size} bytes", max_bytes, "send a smaller image")
        return pb.Image(encoded=path.read_bytes())
    if isinstance(image, (bytes, bytearray, memoryview)):
        return pb.Image(encoded=bytes(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8, got {image.dtype}")
        pixels = image[:, :, None] if image.ndim == 2 else image
        if pixels.ndim != 3:
            raise ValueError(f"numpy images must be (H, W) or (H, W, C), got shape {image.shape}")
        height, width, channels = pixels.shape
        return pb.Image(raw=pb.RawImage(data=np.ascontiguousarray(pixels).tobytes(), height=height,
                                        width=width, channels=channels))
    raise TypeError(f"cannot send {type(image).__name__} as an image: use a path, bytes or a numpy array")


def over_message_limit(what: str, limit: int, remedy: str) -> ResourceExhausted:
    return ResourceExhausted(f"{what}, over the limit of {limit} bytes (PreLabelClient's max_message_bytes; the "
                             f"server's is PRELABEL_MAX_MESSAGE_BYTES): {remedy}, or raise both limits")


class PreLabelClient:
    """A connection to a prelabel server.

    ``timeout`` is each call's deadline in seconds; calls failing with UNAVAILABLE are retried up to
    ``retries`` times (and only those). ``stream_idle_timeout`` gives up a stream (DEADLINE_EXCEEDED)
    when no result has come for that many seconds while images are in flight: a server that stopped
    answering would otherwise hold a batch job for ever (None: wait). ``root_certificates`` (PEM
    bytes) or ``tls=True`` switch to TLS; ``token`` is sent as ``authorization: Bearer <token>``;
    ``channel_options`` are passed to gRPC.
    """

    def __init__(self, target: str, *, timeout: float | None = 60.0, retries: int = 3, tls: bool = False,
                 root_certificates: bytes | None = None, token: str | None = None,
                 max_message_bytes: int = 64 * 1024 * 1024, stream_idle_timeout: float | None = None,
                 channel_options: Sequence[tuple[str, object]] = ()) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes), ("grpc.enable_retries", int(retries > 0)),
                   # gRPC retries only a request that fits its retry buffer (256 KiB by default): a typical
                   # PNG did not, and failed at once on UNAVAILABLE.
                   ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
                   *channel_options]
        if retries > 0:  # gRPC refuses a retry policy of fewer than 2 attempts: no policy at all then
            options.append(("grpc.service_config", _retry_service_config(retries + 1)))
        if tls or root_certificates:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.PrelabelServiceStub(self._channel)
        self._target = target
        self._max_message_bytes = max_message_bytes
        self._timeout = timeout
        self._stream_idle_timeout = stream_idle_timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> "PreLabelClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Waits for the channel to connect; ModelUnavailable if no server answers in ``timeout`` s."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ModelUnavailable(f"no server answered at {self._target} within {timeout} s: "
                                   "is `prelabel serve` running there, on that port?") from None

    def request(self, image: ImageInput, *, model: str = "", model_version: str = "",
                outputs: Iterable[str] = ("mask", "uncertainty"), measure: str = "entropy",
                mask_format: str = "png_uint8", uncertainty_format: str = "png_uint8",
                probabilities_format: str = "raw_float16", uncertainty_threshold: float | None = None,
                mc_samples: int | None = None, mc_seed: int = 0,
                max_review_regions: int | None = None) -> pb.PredictRequest:
        """Builds the PredictRequest that ``predict`` sends (useful to send many alike). ``outputs``
        may also be a single name."""
        message = pb.PredictRequest(
            model=model, model_version=model_version, image=image_message(image, self._max_message_bytes),
            outputs=[_choice(_OUTPUT_ENUMS, o, "output") for o in ((outputs,) if isinstance(outputs, str) else outputs)],
            uncertainty_measure=_choice(_MEASURE_ENUMS, measure, "measure"),
            mask_format=_choice(_MASK_FORMATS, mask_format, "mask_format"),
            uncertainty_format=_choice(_UNCERTAINTY_FORMATS, uncertainty_format, "uncertainty_format"),
            probabilities_format=_choice(_PROBABILITIES_FORMATS, probabilities_format, "probabilities_format"))
        _set_number(message, "mc_seed", mc_seed)
        for option, value in (("uncertainty_threshold", uncertainty_threshold), ("mc_samples", mc_samples),
                              ("max_review_regions", max_review_regions)):
            if value is not None:
                _set_number(message, option, value)
        return message

    def predict(self, image: ImageInput, *, timeout: float | None = None, **options: object) -> Prediction:
        """Pre-annotates one image. Options are those of ``request``."""
        message = self._sendable(self.request(image, **options), "the image")
        return prediction_from_response(self._call(self._stub.Predict, message, timeout))

    def predict_many(self, images: Iterable[ImageInput], *, window: int = 8, raise_on_error: bool = True,
                     timeout: float | None = None, **options: object) -> Iterator[Prediction | FailedPrediction]:
        """Streams ``images`` through PredictStream and yields results in input order.

        At most ``window`` images are sent ahead of the results received, so memory stays bounded
        however long ``images`` is. A failed image raises its error at its position, or with
        ``raise_on_error=False`` yields a FailedPrediction there and goes on. ``timeout`` bounds the
        whole stream.
        """
        def build(item_id: str, image: ImageInput) -> pb.PredictStreamRequest:
            return pb.PredictStreamRequest(id=item_id, request=self.request(image, **options))

        _check_window(window)
        self.request(b"", **options)  # an unknown option name fails here, not item by item in the stream
        return self._ordered_stream(self._stub.PredictStream, images, build, "response", prediction_from_response,
                                    window, raise_on_error, timeout)

    def score_many(self, images: Iterable[ImageInput], *, embeddings: bool = False, top_fraction: float = 0.05,
                   window: int = 8, raise_on_error: bool = True, timeout: float | None = None,
                   **options: object) -> Iterator[ImageScores | FailedPrediction]:
        """Acquisition scores of ``images`` (and their embeddings) over the Score stream, in input
        order; cheap because no maps travel back. Options are those of ``request``."""
        def build(item_id: str, image: ImageInput) -> pb.ScoreRequest:
            return pb.ScoreRequest(id=item_id, request=self.request(image, **options), return_embedding=embeddings,
                                   top_fraction=top_fraction)

        _check_window(window)
        if not 0.0 < top_fraction <= 1.0:  # checked here, or every image would fail with it on its own
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.request(b"", **options)  # an unknown option name fails here, not item by item in the stream
        return self._ordered_stream(self._stub.Score, images, build, "scores", scores_from_message,
                                    window, raise_on_error, timeout)

    def _ordered_stream(self, method, images: Iterable[ImageInput], build: Callable[[str, ImageInput], Message],
                        result_field: str, convert: Callable[[Message], ResultT], window: int, raise_on_error: bool,
                        timeout: float | None) -> Iterator[ResultT | FailedPrediction]:
        """Sends ``build(id, image)`` for each image with at most ``window`` unanswered, and yields
        ``convert(response.<result_field>)`` — or the item's error — in input order. An exception
        from ``images`` itself ends the stream after the results of the images before it, and is
        raised as it was (gRPC would have replaced it with "Exception iterating requests!")."""
        sent_slots = threading.Semaphore(window)
        finished = threading.Event()
        unsent: dict[int, PrelabelError] = {}  # inputs that could not be sent, reported at their position
        unanswered: set[int] = set()  # sent, but the stream ended before their answer
        input_error: list[BaseException] = []
        watch = _IdleWatch(self._stream_idle_timeout)

        def requests() -> Iterator[Message]:
            numbered = enumerate(images)
            while True:
                try:
                    index, image = next(numbered)
                except StopIteration:
                    return
                except Exception as exc:  # the caller's own iterator failed: theirs to see, unchanged
                    input_error.append(exc)
                    return
                while not sent_slots.acquire(timeout=0.2):
                    if finished.is_set():
                        return
                try:
                    message = self._sendable(build(str(index), image), f"input {index}")
                except (OSError, TypeError, ValueError, EncodeError, MemoryError) as exc:
                    unsent[index] = InvalidInput(f"input {index} cannot be sent: {exc or type(exc).__name__}")
                except ResourceExhausted as exc:
                    unsent[index] = exc
                else:
                    watch.sent()
                    yield message
                    continue
                sent_slots.release()  # nothing was sent: holding its slot would stall the stream

        call = method(requests(), timeout=timeout or None, metadata=self._metadata)
        watch.start(call)
        received: dict[int, Message] = {}
        next_index = 0

        def ready_in_order() -> Iterator[ResultT | FailedPrediction]:
            nonlocal next_index
            while next_index in received or next_index in unsent:
                index, next_index = next_index, next_index + 1
                if index in unsent:
                    sent = index in unanswered
                    yield self._failure(unsent.pop(index), raise_on_error, answered=not sent, sent=sent)
                    continue
                sent_slots.release()
                response = received.pop(index)
                if response.HasField(result_field):
                    yield convert(getattr(response, result_field))
                else:
                    yield self._failure(error_for_code(response.error.code, response.error.message), raise_on_error)

        try:
            for response in call:
                watch.received()
                received[int(response.id)] = response
                yield from watch.handed_over(ready_in_order())
            yield from watch.handed_over(ready_in_order())
        except grpc.RpcError as exc:
            error = watch.error() or _error_from(exc)
            if not raise_on_error:
                # Results that arrived behind an unanswered image are handed out, not lost with the
                # stream: each unanswered image before them fails, at its position, with the error.
                for index in range(next_index, max([*received, *unsent], default=-1)):
                    if index not in received and index not in unsent:
                        unanswered.add(index)
                        unsent[index] = error
                yield from ready_in_order()
            raise error from exc
        finally:
            finished.set()
            watch.stop()
            call.cancel()
        if input_error:
            raise input_error[0]

    def _sendable(self, message: Message, what: str) -> Message:
        """``message``, unless it is over the message limit: gRPC would then fail the whole stream,
        and every image after this one would be lost with it (and say only "Sent message larger
        than max" of a single call)."""
        size = message.ByteSize()
        if size > self._max_message_bytes:
            request = message if isinstance(message, pb.PredictRequest) else message.request
            raw = request.image.WhichOneof("source") == "raw"
            remedy = "send it encoded (PNG or JPEG) rather than as raw pixels" if raw else "send a smaller image"
            raise over_message_limit(f"{what} makes a {size}-byte message", self._max_message_bytes, remedy)
        return message

    @staticmethod
    def _failure(error: PrelabelError, raise_on_error: bool, answered: bool = True,
                 sent: bool = True) -> FailedPrediction:
        if raise_on_error:
            raise error
        return FailedPrediction(error, answered=answered, sent=sent)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The standard gRPC health status of ``service`` ("" is the whole server, ``models/NAME``
        one model): "SERVING", "NOT_SERVING", or "SERVICE_UNKNOWN" for a model no longer served;
        ModelNotFound for a name the server never had. Health needs no token."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            response = self._call(health_pb2_grpc.HealthStub(self._channel).Check,
                                  health_pb2.HealthCheckRequest(service=service), timeout)
        except ModelNotFound as exc:  # gRPC's health service says NOT_FOUND and nothing else
            raise ModelNotFound(f"no health service {service!r} on this server: use '' for the server, "
                                "or models/NAME for one model (`prelabel models` lists them)") from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def models(self, timeout: float | None = None) -> list[ModelInfo]:
        response = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [model_info_from_message(m) for m in response.models]

    def model(self, name: str = "", timeout: float | None = None) -> ModelInfo:
        """One model's description; the default model when ``name`` is empty."""
        return model_info_from_message(self._call(self._stub.GetModel, pb.GetModelRequest(name=name), timeout).model)

    def reload_model(self, name: str, timeout: float | None = None) -> tuple[ModelInfo, str]:
        """Asks the server to load model ``name`` again (e.g. after fine-tuning); returns the model
        now serving and the version it replaced."""
        response = self._call(self._stub.ReloadModel, pb.ReloadModelRequest(name=name), timeout)
        return model_info_from_message(response.model), response.previous_version

    def _call(self, method, message, timeout: float | None):
        timeout = timeout or self._timeout
        try:
            return method(message, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error_from(exc, timeout) from exc


class _IdleWatch:
    """Cancels a stream that has had images in flight and no result for ``limit`` seconds; the
    stream then fails with DEADLINE_EXCEEDED saying so, instead of waiting on a stalled server."""

    def __init__(self, limit: float | None) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._in_flight = 0
        self._since = time.monotonic()
        self._done = threading.Event()
        self._expired = False
        self._paused = False

    def sent(self) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._since = time.monotonic()
            self._in_flight += 1

    def received(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._since = time.monotonic()

    def handed_over(self, results: Iterator[ResultT]) -> Iterator[ResultT]:
        """``results``, with the clock stopped while the caller holds each one: a caller slow to
        ask for the next result is not a server that stopped answering."""
        for result in results:
            with self._lock:
                self._paused = True
            try:
                yield result
            finally:
                with self._lock:
                    self._paused = False
                    self._since = time.monotonic()

    def start(self, call: grpc.Future) -> None:
        if self._limit is not None:
            threading.Thread(target=self._watch, args=(call,), name="stream-idle-watch", daemon=True).start()

    def stop(self) -> None:
        self._done.set()

    def error(self) -> DeadlineExceeded | None:
        if not self._expired:
            return None
        return DeadlineExceeded(f"no result for {self._limit:g} s with images in flight: the server stopped answering, "
                                "or an image takes it longer than that (a very large one): raise the client's "
                                "stream_idle_timeout (the CLI's --timeout)")

    def _watch(self, call: grpc.Future) -> None:
        while not self._done.wait(min(1.0, self._limit / 4)):
            with self._lock:
                stalled = self._in_flight > 0 and not self._paused and time.monotonic() - self._since > self._limit
            if stalled:
                self._expired = True
                call.cancel()
                return
