"""What the server admits at once: open streams are capped below the RPC threads, so that a batch
job's streams never leave an annotation tool's single calls (or the health checks) waiting for a
thread; a batch job refused a stream waits for one instead of failing."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from prelabel_client import PreLabelClient, ResourceExhausted
from prelabel_client.batch import predict_files
from prelabel_server.grpc_api.server import RunningServer, start_server
from prelabel_server.settings import ServerSettings


@pytest.fixture
def one_stream_server(model_repository: Path) -> Iterator[RunningServer]:
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                          backend="onnx", workers=2))  # room for 1 open stream
    yield running
    running.stop(grace=0)


def _open_stream(client: PreLabelClient, image: bytes, release: threading.Event) -> Iterator:
    """A stream whose client has not finished sending (a batch job waiting for its next image)
    until ``release`` is set; returned once its first result is in, so it surely holds its slot."""
    def still_sending() -> Iterator[bytes]:
        yield image
        release.wait(60)

    stream = client.predict_many(still_sending(), window=1)
    assert next(stream).mask is not None
    return stream


def test_the_stream_limit_defaults_to_half_the_rpc_threads():
    assert ServerSettings(workers=8).open_streams_limit == 4
    assert ServerSettings(workers=2).open_streams_limit == 1
    assert ServerSettings(workers=8, max_open_streams=6).open_streams_limit == 6


@pytest.mark.parametrize("settings, says", [
    # one RPC thread made the default stream limit 1: a single idle stream then held every thread,
    # and health checks, ListModels and Predict all waited out their deadlines
    ({"workers": 1}, "greater than or equal to 2"),
    ({"workers": 4, "max_open_streams": 4}, "PRELABEL_MAX_OPEN_STREAMS (4) must be below PRELABEL_WORKERS (4)"),
    # a lone stream's own read-ahead (one item per stream worker) overflowed the queue and lost images
    ({"max_queue_size": 4}, "PRELABEL_MAX_QUEUE_SIZE (4) is below PRELABEL_STREAM_WORKERS (8)"),
])
def test_settings_that_would_starve_calls_or_refuse_a_lone_stream_are_startup_errors(settings, says):
    with pytest.raises(ValidationError, match=re.escape(says)):
        ServerSettings(**settings)
    if "max_queue_size" in settings:  # without batching there is no model queue to overflow
        assert ServerSettings(**settings, batching=False).max_queue_size == settings["max_queue_size"]


def _metric(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


def test_streams_beyond_the_limit_are_refused_and_single_calls_still_served(one_stream_server, small_camvid_png):
    release = threading.Event()
    try:
        with PreLabelClient(one_stream_server.address, timeout=120) as client:
            refused_before = _metric("prelabel_streams_refused_total")
            open_stream = _open_stream(client, small_camvid_png, release)
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_OPEN_STREAMS"):
                list(client.predict_many([small_camvid_png]))
            # the refusal is counted (it was in no metric), and the open stream shows
            assert _metric("prelabel_streams_refused_total") == refused_before + 1
            assert _metric("prelabel_open_streams") >= 1
            assert client.predict(small_camvid_png).mask.shape == (101, 133)  # a thread was left for it
            release.set()
            assert list(open_stream) == []  # the first stream ends...
            assert len(list(client.predict_many([small_camvid_png]))) == 1  # ...and frees its slot
    finally:
        release.set()


def test_a_batch_job_refused_a_stream_waits_for_one_and_loses_no_image(one_stream_server, small_camvid_png,
                                                                      camvid_val_images, tmp_path, capsys):
    release = threading.Event()
    try:
        with PreLabelClient(one_stream_server.address, timeout=120) as client:
            open_stream = _open_stream(client, small_camvid_png, release)
            threading.Timer(2.0, release.set).start()  # the other job ends in 2 s
            started = time.perf_counter()
            # Images that cannot be sent: their failures, yielded before the server's refusal (and
            # the refusal's own, for the images before them), were taken for admission, and the
            # job failed whole instead of waiting.
            images = [tmp_path / "missing.png", camvid_val_images[0], tmp_path / "missing2.png",
                      *camvid_val_images[1:3]]
            report = predict_files(client, images, tmp_path / "out", model="deeplab")
            assert time.perf_counter() - started >= 2.0, "the stream was admitted while the slot was taken"
            assert (report.written, report.failed) == (3, 2)
            assert all("missing" in image for image in report.failures)
            assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 5
            assert "server busy" in capsys.readouterr().err
            list(open_stream)
    finally:
        release.set()


def test_a_batch_job_gives_up_after_its_patience(one_stream_server, small_camvid_png, camvid_val_images, tmp_path):
    release = threading.Event()
    try:
        with PreLabelClient(one_stream_server.address, timeout=120) as client:
            held = _open_stream(client, small_camvid_png, release)  # kept: a dropped stream is cancelled
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_OPEN_STREAMS"):
                predict_files(client, camvid_val_images[:1], tmp_path / "out", model="deeplab", patience_s=1.0)
            release.set()
            list(held)
    finally:
        release.set()


def _watch_when_admitted(health: health_pb2_grpc.HealthStub, patience_s: float = 10.0):
    give_up = time.monotonic() + patience_s
    while True:
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        try:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            return watch
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def test_health_watchers_take_stream_slots_and_leave_threads_for_calls(model_repository, small_camvid_png):
    """grpcio's health Watch holds an RPC thread while open; as many watchers as threads used to
    leave no thread for any call (Predict, ListModels and health Check all timed out)."""
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                          backend="onnx", workers=4))  # 2 stream slots
    watches = []
    try:
        with grpc.insecure_channel(running.address) as channel, \
                PreLabelClient(running.address, timeout=30) as client:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(2):
                watches.append(health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60))
                assert next(watches[-1]).status == health_pb2.HealthCheckResponse.SERVING
            refused = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            with pytest.raises(grpc.RpcError) as error:
                next(refused)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "PRELABEL_MAX_OPEN_STREAMS" in error.value.details()
            assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
            assert client.predict(small_camvid_png, model="deeplab").mask.shape == (101, 133)
            watches.pop().cancel()  # a watcher that leaves frees its slot (once the server sees it go)
            watches.append(_watch_when_admitted(health))
    finally:
        for watch in watches:
            watch.cancel()
        running.stop(grace=0)


FROZEN_CLIENT = """
import sys, time
from prelabel_client import PreLabelClient

def one_image_then_wait():
    yield open(sys.argv[2], "rb").read()
    time.sleep(3600)  # a batch job waiting for its next image, until it is frozen

with PreLabelClient(sys.argv[1], timeout=None) as client:
    for result in client.predict_many(one_image_then_wait()):
        print("answered", flush=True)
"""


def test_a_client_that_froze_gives_its_stream_slot_back(model_repository, small_camvid_png, tmp_path) -> None:
    """A client that stops without closing (SIGSTOP here: a suspended VM, a network partition) held
    its stream's slot and RPC thread for gRPC's default keepalive of 2 hours, refusing later jobs."""
    image = tmp_path / "image.png"
    image.write_bytes(small_camvid_png)
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                          backend="onnx", workers=2, keepalive_seconds=1))
    before = _metric("prelabel_open_streams")
    client = subprocess.Popen([sys.executable, "-c", FROZEN_CLIENT, running.address, str(image)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "answered"
        assert _metric("prelabel_open_streams") == before + 1
        client.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while _metric("prelabel_open_streams") > before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric("prelabel_open_streams") == before, "the frozen client still holds its slot"
        with PreLabelClient(running.address, timeout=60) as other:  # the slot is free for the next job
            assert len(list(other.predict_many([small_camvid_png]))) == 1
    finally:
        client.kill()
        client.send_signal(signal.SIGCONT)
        client.wait()
        running.stop(grace=0)
