"""Memory freed by large requests goes back to the system once the server is idle, and only then."""

from __future__ import annotations

import time

import numpy as np

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import RunningServer
from prelabel_server.memory import LARGE_BYTES, RequestActivity


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_trim_follows_a_large_request_once_the_server_has_been_idle():
    activity = RequestActivity(idle_seconds=0.1)
    activity.started()
    activity.ended()  # small requests: nothing to give back
    time.sleep(0.3)
    assert activity.trims == 0
    activity.started()
    activity.large()
    activity.started()  # a second request still runs when the large one ends
    activity.ended()
    time.sleep(0.3)
    assert activity.trims == 0
    activity.ended()
    assert _wait_for(lambda: activity.trims == 1)


def test_a_request_in_the_idle_window_puts_the_trim_off():
    activity = RequestActivity(idle_seconds=0.3)
    activity.started()
    activity.large()
    activity.ended()
    time.sleep(0.1)
    activity.started()  # the server is busy again before the trim was due
    time.sleep(0.4)
    assert activity.trims == 0
    activity.ended()
    assert _wait_for(lambda: activity.trims == 1)


def test_the_server_trims_after_a_large_image_and_not_after_small_ones(onnx_server: RunningServer,
                                                                        onnx_client: PreLabelClient,
                                                                        small_camvid_rgb: np.ndarray):
    activity = onnx_server.engine.activity
    assert _wait_for(lambda: not activity.pending)  # an earlier test's large image is dealt with
    before = activity.trims
    onnx_client.predict(small_camvid_rgb)
    time.sleep(1.5)
    assert activity.trims == before
    side = int((LARGE_BYTES / 3) ** 0.5) + 8
    large = np.ascontiguousarray(np.resize(small_camvid_rgb, (side, side, 3)))
    assert large.nbytes > LARGE_BYTES
    onnx_client.predict(large, outputs=("mask",))
    assert _wait_for(lambda: activity.trims == before + 1)


def test_wait_idle_returns_once_the_last_request_ends():
    activity = RequestActivity()
    activity.started()
    assert not activity.wait_idle(timeout=0.05)
    activity.ended()
    assert activity.wait_idle(timeout=0.05)
