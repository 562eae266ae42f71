"""What the server admits at once: open streams are capped below the RPC threads, so that a batch
job's streams never leave an annotation tool's single calls (or the health checks) waiting for a
thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from prelabel_client import PreLabelClient, ResourceExhausted
from prelabel_server.grpc_api.server import start_server
from prelabel_server.settings import ServerSettings


def test_the_stream_limit_defaults_to_half_the_rpc_threads():
    assert ServerSettings(workers=8).open_streams_limit == 4
    assert ServerSettings(workers=1).open_streams_limit == 1
    assert ServerSettings(workers=8, max_open_streams=6).open_streams_limit == 6


def test_streams_beyond_the_limit_are_refused_and_single_calls_still_served(model_repository: Path,
                                                                         small_camvid_png: bytes):
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                          backend="onnx", workers=2))  # room for 1 open stream
    release = threading.Event()

    def still_sending() -> Iterator[bytes]:  # a batch job whose next image is not ready yet
        yield small_camvid_png
        release.wait(60)

    try:
        with PreLabelClient(running.address, timeout=120) as client:
            open_stream = client.predict_many(still_sending(), window=1)
            assert next(open_stream).mask.shape == (101, 133)
            with pytest.raises(ResourceExhausted, match="PRELABEL_MAX_OPEN_STREAMS"):
                list(client.predict_many([small_camvid_png]))
            assert client.predict(small_camvid_png).mask.shape == (101, 133)  # a thread was left for it
            release.set()
            assert list(open_stream) == []  # the first stream ends...
            assert len(list(client.predict_many([small_camvid_png]))) == 1  # ...and frees its slot
    finally:
        release.set()
        running.stop(grace=0)
