"""Server-wide settings, read from ``PRELABEL_*`` environment variables; CLI flags override them."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_model_repository() -> Path:
    """The project's own ``models/`` folder (the one holding the default model package)."""
    import prelabel_models

    return Path(prelabel_models.__file__).resolve().parents[1]


# Read by the command-line client, not the server: allowed beside the server's own variables.
CLIENT_VARIABLES = frozenset({"PRELABEL_SERVER", "PRELABEL_TOKEN"})
# What Kubernetes sets in every pod for a Service named "prelabel" (service links), not settings.
_SERVICE_LINKS = re.compile(r"PRELABEL_SERVICE_(HOST|PORT)(_\w+)?|PRELABEL_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?")
_DEVICE = re.compile(r"(cpu|cuda(:\d+)?)")


class ServerSettings(BaseSettings):
    """Every field can be set as ``PRELABEL_<FIELD>`` (e.g. ``PRELABEL_PORT=50052``)."""

    model_config = SettingsConfigDict(env_prefix="PRELABEL_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on; 0.0.0.0 for all interfaces.")
    port: int = Field(default=50051, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    reuse_port: bool = Field(default=False, description=(
        "Let several server processes listen on one port (SO_REUSEPORT: the kernel spreads connections "
        "over them). Off: a port already in use is a startup error, not a second server beside the first."))
    model_repository: Path = Field(default_factory=default_model_repository,
                                   description="Folder whose sub-folders are model packages.")
    default_model: str = Field(default="", description="Model used when a request names none; empty: the first ready model by name, kept while it is ready.")
    backend: Literal["auto", "torch", "onnx"] = Field(default="auto", description="auto (torch on a GPU, onnx on the CPU), torch or onnx.")
    device: str = Field(default="", description="Device override, e.g. cpu, cuda:0; empty: the backend's choice.")
    fp16: bool = Field(default=False, description="fp16 autocast for the torch backend on CUDA.")
    device_maps: bool = Field(default=True, description=(
        "On a GPU, turn the logits into the mask, confidence and uncertainty there and copy only those "
        "back; off: copy the logits and derive the maps on the host, as on the CPU (less GPU memory)."))
    cuda_graphs: bool = Field(default=True, description=(
        "On a GPU, replay the network's forward pass as CUDA graphs (one per input shape, batches rounded "
        "up to a power of two): one launch instead of hundreds, each of which waited for the GIL "
        "(docs/benchmarks.md). Off: launch layer by layer (less GPU memory)."))
    inference_threads: int = Field(default=0, ge=0, le=1024, description="Intra-op threads per model; 0: the runtime's default.")
    onnx_spin_wait: bool = Field(default=True, description=(
        "Let ONNX Runtime's intra-op threads spin between operators (never after a run returns). "
        "On (the runtime's default); off lost every one of 6 paired rounds on 2 cores (docs/benchmarks.md)."))
    workers: int = Field(default=8, ge=2, le=4096, description=(
        "Threads serving RPCs; at least 2, since streams may never hold them all (max_open_streams)."))
    stream_workers: int = Field(default=8, ge=1, le=4096, description=(
        "Threads processing streamed items (shared by all streams). A batch only fills with items decoded "
        "while the one before it runs, so full batches need twice max_batch_size in the engine: with 4, "
        "streamed batches alternated 1 and 3 images; with 8 they hold 4 (docs/benchmarks.md)."))
    max_open_streams: int = Field(default=0, ge=0, description=(
        "Streams (PredictStream, Score) open at once; more are refused with RESOURCE_EXHAUSTED. A stream "
        "holds an RPC thread while it is open, so the cap keeps threads free for single calls. "
        "0: half the RPC threads, at least 1."))
    max_in_flight_per_stream: int = Field(default=16, ge=1, le=4096, description=(
        "Requests read ahead of sent responses, per stream: enough to keep every stream worker busy."))
    max_stream_bytes: int = Field(default=512 << 20, ge=0, le=1 << 40, description=(
        "Bytes of streamed requests the server holds at once (read ahead or in progress), across all streams; "
        "a stream stops reading while they are taken, and its client waits. 0 = no limit."))
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31 - 1,  # gRPC takes a 32-bit int
                                   description="Largest request or response message.")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="Largest image, height x width (also the decompression-bomb guard).")
    batching: bool = Field(default=True, description="Dynamic batching per model; off runs each request on its own thread at once.")
    max_queue_size: int = Field(default=64, ge=1, description="Requests queued per model before new ones get RESOURCE_EXHAUSTED.")
    max_concurrent_rpcs: int = Field(default=0, ge=0, description=(
        "Calls in progress or waiting for an RPC thread (a stream counts as one); more are refused at "
        "once with RESOURCE_EXHAUSTED. 0: workers + max_queue_size."))
    max_image_side: int = Field(default=20_000, ge=16, description="Longest image side accepted, in pixels.")
    tile_batch: int = Field(default=4, ge=1, le=256, description="Tiles of a large image run through the network together.")
    auth_token: str = Field(default="", description="If set, every call must send 'authorization: Bearer <token>'.")
    tls_certificate: Path | None = Field(default=None, description="PEM certificate chain: serve TLS instead of plaintext.")
    tls_private_key: Path | None = Field(default=None, description="PEM private key for tls_certificate.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Port for Prometheus /metrics over HTTP; 0 = off.")
    health_port: int = Field(default=0, ge=0, le=65535, description=(
        "Port for the gRPC health service alone, plaintext, on threads of its own (for Kubernetes probes, "
        "which speak no TLS): it answers while large requests hold every RPC thread of the main port; 0 = off."))
    repository_poll_seconds: float = Field(default=0.0, ge=0, le=86_400, allow_inf_nan=False, description=(
        "Poll the model repository this often and reload packages whose files changed (and load new "
        "ones) once they have stayed the same for one more poll; 0 = off (ReloadModel only)."))
    keepalive_seconds: float = Field(default=60.0, ge=1, le=86_400, allow_inf_nan=False, description=(
        "While a call is open, ping its client this often, and drop the connection when a ping goes this "
        "long unanswered: a client that froze or vanished without closing (a suspended VM, a partition) "
        "held its stream's slot and RPC thread for gRPC's default of 2 hours."))
    grace_seconds: float = Field(default=5.0, ge=0, le=86_400, allow_inf_nan=False,
                                 description="On shutdown, time given to calls in flight.")

    @field_validator("repository_poll_seconds")
    @classmethod
    def _poll_not_busy(cls, seconds: float) -> float:
        if 0 < seconds < 0.1:
            raise ValueError("polling more often than every 0.1 s would keep a core busy: use 0 (off) or 0.1 or more")
        return seconds

    @field_validator("host")
    @classmethod
    def _host_without_brackets(cls, host: str) -> str:
        """An IPv6 literal is kept bare (``::1``): the listeners that need brackets add them."""
        return host.strip("[]")

    @field_validator("port", mode="before")
    @classmethod
    def _not_a_service_link(cls, port: object) -> object:
        if isinstance(port, str) and "://" in port:
            raise ValueError(f"{port!r} is an address, as Kubernetes sets PRELABEL_PORT for a Service named "
                             "prelabel: set PRELABEL_PORT to the port number in the pod's environment (or "
                             "enableServiceLinks: false)")
        return port

    @field_validator("device")
    @classmethod
    def _device_form(cls, device: str) -> str:
        if device and not _DEVICE.fullmatch(device):
            raise ValueError(f"{device!r} is not a device: use cpu, cuda or cuda:N (or leave it empty for the "
                             "backend's choice)")
        return device

    @model_validator(mode="after")
    def _no_unknown_variables(self) -> "ServerSettings":
        """pydantic-settings ignores environment variables that match no field, so a misspelled one
        (PRELABEL_AUTH_TOKENS) silently left its setting at the default: there, no authentication."""
        known = {f"PRELABEL_{name.upper()}" for name in type(self).model_fields} | CLIENT_VARIABLES
        unknown = sorted(name for name in os.environ if name.upper().startswith("PRELABEL_")  # read in any case
                         and name.upper() not in known and not _SERVICE_LINKS.fullmatch(name.upper()))
        if unknown:
            hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name.upper(), known, 1))
                     else name for name in unknown]
            raise ValueError(f"unknown setting {', '.join(hints)}: unset it, or see README's settings table")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerSettings":
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            raise ValueError("TLS needs both PRELABEL_TLS_CERTIFICATE and PRELABEL_TLS_PRIVATE_KEY; with only one "
                             "the server would have served plaintext")
        return self

    @model_validator(mode="after")
    def _a_thread_left_for_calls(self) -> "ServerSettings":
        if self.max_open_streams >= self.workers:
            raise ValueError(f"PRELABEL_MAX_OPEN_STREAMS ({self.max_open_streams}) must be below PRELABEL_WORKERS "
                             f"({self.workers}): an open stream holds an RPC thread, and single calls and health "
                             "checks need one left")
        return self

    @model_validator(mode="after")
    def _queue_takes_a_streams_reads(self) -> "ServerSettings":
        if self.batching and self.max_queue_size < self.stream_workers:  # without batching there is no queue
            raise ValueError(f"PRELABEL_MAX_QUEUE_SIZE ({self.max_queue_size}) is below PRELABEL_STREAM_WORKERS "
                             f"({self.stream_workers}): a single stream's own items, read ahead, would be refused "
                             "as a full queue; raise the queue size or lower the stream workers")
        return self

    @property
    def admitted_rpcs(self) -> int:
        """The bound on calls the server holds at once. Without one, calls beyond the RPC threads
        wait in gRPC's own queue, which has no limit: a flood of requests would grow memory and
        latency without end, and the model's bounded queue would never refuse one."""
        return self.max_concurrent_rpcs or self.workers + self.max_queue_size

    @property
    def open_streams_limit(self) -> int:
        """Streams admitted at once: a batch job's streams never take every RPC thread from the
        annotation tools' single calls and the health checks."""
        return self.max_open_streams or max(1, self.workers // 2)
