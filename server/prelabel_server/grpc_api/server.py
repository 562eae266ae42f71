"""Assembles and runs the gRPC server: PrelabelService, health (overall and per model), reflection."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from prelabel_models.backends import check_device
from prelabel_proto import SERVICE_NAME
from prelabel_proto import prelabel_pb2_grpc as pb_grpc
from prelabel_server.engine import Engine
from prelabel_server.grpc_api.interceptors import ErrorInterceptor, TokenInterceptor
from prelabel_server.grpc_api.servicer import PrelabelServicer, StreamSlots
from prelabel_server.metrics import start_metrics_server
from prelabel_server.settings import ServerSettings

log = logging.getLogger(__name__)
_PROBE_THREADS = 4  # the health port's own RPC threads
_HANDLERS_FINISH_S = 30.0  # for calls already cancelled to reach their next check (a tiled image's next band)


def model_health_name(model: str) -> str:
    """Health-check service name of one model, e.g. ``models/camvid``."""
    return f"models/{model}"


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    engine: Engine
    health: health.HealthServicer
    stream_executor: ThreadPoolExecutor
    probes: ProbeServer | None = None

    @property
    def address(self) -> str:
        host = self.engine.settings.host
        return _host_port('127.0.0.1' if host in ('0.0.0.0', '::') else host, self.port)

    def stop(self, grace: float | None = None) -> None:
        self.health.enter_graceful_shutdown()
        if self.probes is not None:
            self.probes.health.enter_graceful_shutdown()
        self.server.stop(self.engine.settings.grace_seconds if grace is None else grace).wait()
        if self.probes is not None:
            self.probes.server.stop(0).wait()
        # Items already running finish (their callers are gone, so the batcher drops them or a
        # tiled image stops at its next band); left running, they met the CPU pool shut down at
        # the interpreter's exit and logged internal errors.
        self.stream_executor.shutdown(wait=True, cancel_futures=True)
        if not self.engine.wait_idle(timeout=_HANDLERS_FINISH_S):
            log.warning("requests still running %.0f s after the server stopped; exiting anyway", _HANDLERS_FINISH_S)
        self.engine.close()


class _BoundedWatchHealth(health.HealthServicer):
    """The standard health service, whose ``Watch`` takes a stream slot: grpcio's blocking Watch
    holds an RPC thread for as long as the watcher stays, and 8 watchers (gRPC's client-side
    health checking opens one per channel) took every thread: no call was answered any more."""

    def __init__(self, slots: StreamSlots) -> None:
        super().__init__()
        self._slots = slots

    def Watch(self, request, context, send_response_callback=None):  # noqa: N802 (gRPC's name)
        with self._slots.held():
            yield from super().Watch(request, context, send_response_callback)


@dataclass
class ProbeServer:
    """The health service alone on ``PRELABEL_HEALTH_PORT``, plaintext, with threads of its own:
    on the main port, health checks share the RPC threads with Predict, and with 8 large calls in
    progress they timed out for minutes (a Kubernetes liveness probe would have restarted a
    server that was only busy). Its own gRPC server also parses its own messages: 64 MiB
    requests on the main port delayed health there past 5 s too."""

    server: grpc.Server
    health: health.HealthServicer
    port: int

    @classmethod
    def start(cls, settings: ServerSettings) -> "ProbeServer":
        server = grpc.server(ThreadPoolExecutor(_PROBE_THREADS, thread_name_prefix="health"),
                             maximum_concurrent_rpcs=4 * _PROBE_THREADS,
                             options=[("grpc.so_reuseport", 0)])  # else a second server took half the probes
        servicer = _BoundedWatchHealth(StreamSlots(_PROBE_THREADS // 2))  # Watch never takes every thread
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        address = _host_port(settings.host, settings.health_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # grpcio's "Failed to bind"
            port = 0
        if port == 0:
            raise OSError(f"cannot serve health on {address}: is another server using the port? Choose another "
                          "PRELABEL_HEALTH_PORT, or 0 for none")
        server.start()
        return cls(server, servicer, port)


class _ModelHealth:
    """Publishes every model's health names from the registry, to each health servicer (the main
    port's and the probe port's). A model gone from it (renamed, or a failed entry replaced once
    its package is fixed) becomes SERVICE_UNKNOWN instead of keeping its last status. Registry
    listeners run on the watcher's and reloading threads, hence the lock."""

    def __init__(self, servicers: list[health.HealthServicer], engine: Engine) -> None:
        self._servicers, self._engine = servicers, engine
        self._published: set[str] = set()
        self._lock = threading.Lock()

    def _set(self, name: str, status: int) -> None:
        for servicer in self._servicers:
            servicer.set(name, status)

    def update(self) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        with self._lock:
            models = self._engine.models()
            for gone in self._published - {status.name for status in models}:
                for name in (model_health_name(gone), f"{model_health_name(gone)}/device"):
                    self._set(name, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            self._published = {status.name for status in models}
            for status in models:
                ready = status.state == "ready"
                self._set(model_health_name(status.name), serving if ready else not_serving)
                # Serving, but not on its device (see device_fallback): a separate name, so that routing can tell.
                self._set(f"{model_health_name(status.name)}/device",
                                   serving if ready and not status.degradation else not_serving)
            overall = serving if any(s.state == "ready" and s.is_default for s in models) else not_serving
            self._set("", overall)
            self._set(SERVICE_NAME, overall)


def _host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 literal in brackets (gRPC read ``::1:50051`` as a name to look up)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(server: grpc.Server, settings: ServerSettings) -> int:
    address = _host_port(settings.host, settings.port)
    credentials = _tls_credentials(settings)
    try:
        socket.getaddrinfo(settings.host, settings.port)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {address}: host {settings.host!r} does not resolve ({exc.strerror}); "
                      "set PRELABEL_HOST to an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    try:
        if credentials is not None:
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio's "Failed to bind"
        raise OSError(f"cannot listen on {address} ({exc}): is another server using the port? Choose another "
                      "with PRELABEL_PORT, or set PRELABEL_REUSE_PORT=true to run several processes on it") from None


def _tls_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials, once Python's ssl module has accepted the pair: gRPC reports a
    bad certificate or key, or a key that belongs to another certificate, only as a failed bind."""
    if settings.tls_certificate is None or settings.tls_private_key is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(f"cannot serve TLS with PRELABEL_TLS_CERTIFICATE={settings.tls_certificate} and "
                      f"PRELABEL_TLS_PRIVATE_KEY={settings.tls_private_key}: {exc.strerror or exc} (both must be PEM "
                      "files, the key the certificate's own)") from None
    return grpc.ssl_server_credentials([(settings.tls_private_key.read_bytes(), settings.tls_certificate.read_bytes())])


def _start_metrics(settings: ServerSettings) -> None:
    try:
        start_metrics_server(settings.metrics_port, settings.host)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {settings.host}:{settings.metrics_port} ({exc.strerror or exc}): "
                      "choose another PRELABEL_METRICS_PORT, or 0 for none") from None


def start_server(settings: ServerSettings) -> RunningServer:
    """Loads the model repository, then starts serving; returns once the port is bound."""
    check_device(settings.backend, settings.device)  # else every package would fail alike, and serve NOT_SERVING
    engine = Engine(settings)
    try:
        engine.load_models()
    except Exception:
        engine.close()  # the models loaded so far would keep their threads
        raise
    interceptors = [TokenInterceptor(settings.auth_token)] if settings.auth_token else []
    interceptors.append(ErrorInterceptor())
    limits = [("grpc.max_receive_message_length", settings.max_message_bytes),
              ("grpc.max_send_message_length", settings.max_message_bytes),
              # gRPC's default (on) let a second server share a busy port
              ("grpc.so_reuseport", int(settings.reuse_port)),
              ("grpc.keepalive_time_ms", int(settings.keepalive_seconds * 1000)),
              ("grpc.keepalive_timeout_ms", int(settings.keepalive_seconds * 1000)),
              ("grpc.http2.ping_timeout_ms", int(settings.keepalive_seconds * 1000)),
              ("grpc.http2.max_pings_without_data", 0)]  # a stream waiting on a frozen client sends no data
    server = grpc.server(ThreadPoolExecutor(settings.workers, thread_name_prefix="rpc"),
                         interceptors=interceptors, options=limits, maximum_concurrent_rpcs=settings.admitted_rpcs)
    stream_executor = ThreadPoolExecutor(settings.stream_workers, thread_name_prefix="stream-item")
    stream_slots = StreamSlots(settings.open_streams_limit)
    health_servicer = _BoundedWatchHealth(stream_slots)
    pb_grpc.add_PrelabelServiceServicer_to_server(
        PrelabelServicer(engine, stream_executor, stream_slots), server)
    probes = None
    try:
        probes = ProbeServer.start(settings) if settings.health_port else None
    except OSError:
        engine.close()
        raise
    model_health = _ModelHealth([health_servicer] + ([probes.health] if probes else []), engine)
    engine.registry.add_listener(model_health.update)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = _bind(server, settings)
        if port == 0:
            raise OSError(f"cannot listen on {settings.host}:{settings.port}: is another server using the port?")
        if settings.metrics_port:
            _start_metrics(settings)
    except OSError:
        engine.close()  # its models' threads would outlive the server that never started
        if probes is not None:
            probes.server.stop(0)
        raise
    server.start()
    model_health.update()
    return RunningServer(server, port, engine, health_servicer, stream_executor, probes)


def serve(settings: ServerSettings) -> None:
    """Runs until SIGINT or SIGTERM, then drains calls in flight for ``grace_seconds``."""
    running = start_server(settings)
    for status in running.engine.models():
        log.info("model %-20s %-7s %s %s %s", status.name, status.state, status.backend, status.device, status.error)
    listening = _host_port(settings.host, running.port)
    if settings.host in ("0.0.0.0", "::"):
        listening += " (all interfaces)"
    print(f"prelabel serving on {listening} (default model: {running.engine.registry.default_name or 'none'})",
          flush=True)
    if running.probes is not None:
        log.info("health alone (for probes, plaintext) on %s", _host_port(settings.host, running.probes.port))
    if not running.engine.registry.default_name:
        log.warning("no model is ready in %s: health is NOT_SERVING until a package loads (fix it, then "
                    "ReloadModel; PRELABEL_MODEL_REPOSITORY names another folder)", settings.model_repository)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # Python runs signal handlers on the main thread, but the kernel may deliver the signal to any
    # of the server's threads; a main thread blocked in one endless wait then never runs the
    # handler (seen with CUDA's threads on an H100: SIGTERM ignored). Waking each second lets it.
    while not stop.wait(timeout=1.0):
        pass
    log.info("stopping: calls in flight get %g s to finish (PRELABEL_GRACE_SECONDS)", settings.grace_seconds)
    running.stop()
    log.info("stopped")
