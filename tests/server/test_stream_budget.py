"""The bytes of streamed requests a server holds are bounded across streams: a stream waits to
read more while the budget is taken, and nothing is refused or lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.streaming import ByteBudget, process_stream


class _Recorder:
    """Items (their size is their value) held for a moment each, recording the bytes in progress."""

    def __init__(self) -> None:
        self.lock, self.held, self.peak = threading.Lock(), 0, 0

    def handle(self, size: int) -> int:
        with self.lock:
            self.held += size
            self.peak = max(self.peak, self.held)
        threading.Event().wait(0.02)
        with self.lock:
            self.held -= size
        return size


def test_streams_share_the_budget_and_every_item_is_answered():
    budget, recorder = ByteBudget(100), _Recorder()
    with ThreadPoolExecutor(8) as executor:
        def one_stream(sizes: list[int]) -> list[int]:
            return sorted(process_stream(iter(sizes), recorder.handle, executor, max_in_flight=16,
                                         budget=budget, size_of=lambda size: size))

        streams = [[30] * 10, [40] * 10, [25] * 12]
        with ThreadPoolExecutor(len(streams)) as callers:
            answered = list(callers.map(one_stream, streams))
    assert answered == [sorted(sizes) for sizes in streams]
    assert 0 < recorder.peak <= 100  # without the budget, 3 streams x 16 read ahead: 1300
    assert budget.held == 0  # all given back


def test_an_item_larger_than_the_budget_waits_its_turn_instead_of_for_ever():
    budget, recorder = ByteBudget(100), _Recorder()
    with ThreadPoolExecutor(4) as executor:
        answers = list(process_stream(iter([60, 500, 60]), recorder.handle, executor, max_in_flight=4,
                                      budget=budget, size_of=lambda size: size))
    assert sorted(answers) == [60, 60, 500]
    assert recorder.peak == 500  # alone: nothing else held any of the budget meanwhile


def test_a_stream_whose_client_left_gives_its_bytes_back():
    budget, release = ByteBudget(100), threading.Event()
    with ThreadPoolExecutor(2) as executor:
        stream = process_stream(iter([50, 50, 50]), lambda size: release.wait(10) and size, executor,
                                max_in_flight=4, budget=budget, size_of=lambda size: size)
        reader = threading.Thread(target=lambda: next(stream, None))
        reader.start()
        threading.Event().wait(0.3)  # two items hold the budget, the third waits to be read
        release.set()
        reader.join(10)
        stream.close()  # the client left after its first answer
    deadline = time.monotonic() + 10  # the stream's reader notices within 0.5 s
    while budget.held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert budget.held == 0


def test_a_server_with_a_small_budget_answers_every_streamed_image(start_extra_server, small_camvid_png: bytes):
    running = start_extra_server(max_stream_bytes=len(small_camvid_png) * 2)
    with PreLabelClient(running.address, timeout=120) as client:
        results = list(client.predict_many([small_camvid_png] * 12))
    assert len(results) == 12 and all(result.ok for result in results)
    assert all(np.array_equal(result.mask, results[0].mask) for result in results)


def test_a_large_item_is_let_in_before_the_small_ones_that_came_after_it():
    """Streams of small items kept the budget full, and a large one waited for as long as they
    went on (4140 small items went by it in 20 s)."""
    budget, never = ByteBudget(100), threading.Event()
    assert budget.reserve(60, never)
    order: list[str] = []
    large = threading.Thread(target=lambda: budget.reserve(90, never) and order.append("large"))
    large.start()
    threading.Event().wait(0.2)  # the large item waits: 60 + 90 > 100
    small = threading.Thread(target=lambda: budget.reserve(30, never) and order.append("small"))
    small.start()
    threading.Event().wait(0.2)
    assert order == []  # 60 + 30 would fit, but the large item came first
    budget.release(60)
    large.join(5)
    assert order == ["large"]
    budget.release(90)
    small.join(5)
    assert order == ["large", "small"] and budget.held == 30


def test_a_streamed_image_counts_as_what_it_takes_decoded(small_camvid_png: bytes, small_camvid_rgb: np.ndarray):
    """Counted by message size alone, one stream of 8 PNGs of 150 kB each took a server from 0.8
    to 2.4 GB: a small PNG may hold many pixels."""
    from prelabel_proto import prelabel_pb2 as pb
    from prelabel_server.grpc_api.servicer import _held_bytes

    encoded = pb.PredictRequest(image=pb.Image(encoded=small_camvid_png))
    assert _held_bytes(encoded) == len(small_camvid_png) + small_camvid_rgb.size
    height, width, channels = small_camvid_rgb.shape
    raw = pb.PredictRequest(image=pb.Image(raw=pb.RawImage(data=small_camvid_rgb.tobytes(), height=height,
                                                            width=width, channels=channels)))
    assert _held_bytes(raw) >= small_camvid_rgb.size
