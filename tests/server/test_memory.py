"""Memory freed by large requests goes back to the system once the server is idle, and only then."""

from __future__ import annotations

import time

import numpy as np

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import RunningServer
from prelabel_server.memory import LARGE_BYTES, IdleTrimmer


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_trim_follows_a_large_request_once_the_server_has_been_idle():
    trimmer = IdleTrimmer(idle_seconds=0.1)
    trimmer.started()
    trimmer.ended()  # small requests: nothing to give back
    time.sleep(0.3)
    assert trimmer.trims == 0
    trimmer.started()
    trimmer.large()
    trimmer.started()  # a second request still runs when the large one ends
    trimmer.ended()
    time.sleep(0.3)
    assert trimmer.trims == 0
    trimmer.ended()
    assert _wait_for(lambda: trimmer.trims == 1)


def test_a_request_in_the_idle_window_puts_the_trim_off():
    trimmer = IdleTrimmer(idle_seconds=0.3)
    trimmer.started()
    trimmer.large()
    trimmer.ended()
    time.sleep(0.1)
    trimmer.started()  # the server is busy again before the trim was due
    time.sleep(0.4)
    assert trimmer.trims == 0
    trimmer.ended()
    assert _wait_for(lambda: trimmer.trims == 1)


def test_the_server_trims_after_a_large_image_and_not_after_small_ones(onnx_server: RunningServer,
                                                                        onnx_client: PreLabelClient,
                                                                        small_camvid_rgb: np.ndarray):
    trimmer = onnx_server.engine.trimmer
    assert _wait_for(lambda: not trimmer.pending)  # an earlier test's large image is dealt with
    before = trimmer.trims
    onnx_client.predict(small_camvid_rgb)
    time.sleep(1.5)
    assert trimmer.trims == before
    side = int((LARGE_BYTES / 3) ** 0.5) + 8
    large = np.ascontiguousarray(np.resize(small_camvid_rgb, (side, side, 3)))
    assert large.nbytes > LARGE_BYTES
    onnx_client.predict(large, outputs=("mask",))
    assert _wait_for(lambda: trimmer.trims == before + 1)
