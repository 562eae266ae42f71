"""Prometheus metrics of the server, exported over HTTP when ``metrics_port`` is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter("prelabel_requests_total", "Segmentation requests by model and outcome.", ["model", "outcome"])
REQUEST_SECONDS = Histogram("prelabel_request_seconds", "Time inside the server per request.", ["model"],
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
BATCH_SIZE = Histogram("prelabel_batch_size", "Requests per forward pass.", ["model"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
QUEUE_DEPTH = Gauge("prelabel_queue_depth", "Requests waiting in a model's batching queue.", ["model"])
DROPPED = Counter("prelabel_dropped_total", "Requests dropped before inference because their caller left.", ["model"])
DEVICE_FALLBACKS = Counter("prelabel_device_fallbacks_total",
                           "Requests run on the CPU because the model's accelerator failed (see device_fallback).", ["model"])
DEGRADED = Gauge("prelabel_model_degraded", "1 while a model runs on its CPU fallback instead of its device.", ["model"])
REJECTED = Counter("prelabel_rejected_total", "Requests refused because a model's queue was full.", ["model"])
OPEN_STREAMS = Gauge("prelabel_open_streams", "Streams open now (PredictStream, Score, health Watch).")
STREAMS_REFUSED = Counter("prelabel_streams_refused_total",
                          "Streams refused because PRELABEL_MAX_OPEN_STREAMS were already open.")


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serves /metrics on ``host:port`` from a daemon thread."""
    start_http_server(port, addr=host)
