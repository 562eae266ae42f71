"""A server that cannot start says why at once: a port already in use is an error, not a second
server beside the first (gRPC's default, SO_REUSEPORT, allowed that silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import start_server
from prelabel_server.settings import ServerSettings


def _settings(model_repository: Path, **fields: object) -> ServerSettings:
    return ServerSettings(host="127.0.0.1", model_repository=model_repository, backend="onnx", **fields)


def test_a_port_in_use_is_a_startup_error(model_repository, small_camvid_png):
    first = start_server(_settings(model_repository, port=0))
    try:
        with pytest.raises(OSError, match="is another server using the port.*PRELABEL_REUSE_PORT"):
            start_server(_settings(model_repository, port=first.port))
        with PreLabelClient(first.address, timeout=60) as client:  # the first one is unharmed
            assert client.predict(small_camvid_png, model="deeplab").mask.shape == (101, 133)
    finally:
        first.stop(grace=0)


def test_processes_may_share_a_port_when_asked(model_repository):
    first = start_server(_settings(model_repository, port=0, reuse_port=True))
    try:
        second = start_server(_settings(model_repository, port=first.port, reuse_port=True))
        assert second.port == first.port
        second.stop(grace=0)
    finally:
        first.stop(grace=0)
