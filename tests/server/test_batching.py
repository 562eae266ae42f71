"""Dynamic batching, functionally (never timed): grouping, isolation, back-pressure, dropping
requests whose caller left, and streams that free their slots when cancelled."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from prelabel_client import PreLabelClient, ResourceExhausted
from prelabel_models import ModelPackage
from prelabel_models.backends import create_backend
from prelabel_models.image_files import list_images, read_rgb
from prelabel_models.predictor import Predictor
from prelabel_proto.errors import PrelabelError
from prelabel_server.batching import DynamicBatcher
from prelabel_server.grpc_api.server import RunningServer, start_server
from prelabel_server.settings import ServerSettings

MODEL = "batchy"


@pytest.fixture(scope="module")
def val_images(camvid_root: Path) -> list[Path]:
    return list_images(camvid_root / "val")[:8]


@pytest.fixture(scope="module")
def batch_repository(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """The test DeepLabV3+ under a card that waits long enough (400 ms) for batches to form."""
    repository = tmp_path_factory.mktemp("batching-repo")
    ModelPackage.open(model_repository / "deeplab").copy_to(repository / MODEL, name=MODEL, tile_size=512,
                                                            max_batch_size=4, max_queue_delay_ms=400)
    return repository


def _serve(repository: Path, **settings: object) -> RunningServer:
    return start_server(ServerSettings(port=0, model_repository=repository, backend="onnx", **settings))


@pytest.fixture(scope="module")
def batching_server(batch_repository: Path):
    running = _serve(batch_repository)
    yield running
    running.stop(grace=0)


def _concurrently(count: int, call) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_result(batching_server, val_images):
    with PreLabelClient(batching_server.address, timeout=120) as client:
        batched = _concurrently(4, lambda i: client.predict(val_images[i]))
        alone = [client.predict(path) for path in val_images[:4]]
    assert max(p.response.batch_size for p in batched) > 1, [p.response.batch_size for p in batched]
    assert all(p.response.batch_size == 1 for p in alone)
    for together, single in zip(batched, alone):
        assert (together.mask == single.mask).mean() > 0.999
    assert not all((batched[0].mask == other.mask).all() for other in batched[1:]), "results were mixed up"


def test_a_stream_keeps_the_forward_passes_full(batch_repository, val_images, tmp_path):
    """With the default settings and no queueing delay (the default model's card), a single
    stream's items fill every batch: they are decoded while the batch before them runs."""
    ModelPackage.open(batch_repository / MODEL).copy_to(tmp_path / "eager" / MODEL, name=MODEL,
                                                        max_batch_size=4, max_queue_delay_ms=0)
    running = _serve(tmp_path / "eager")
    try:
        with PreLabelClient(running.address, timeout=120) as client:
            sizes = [p.response.batch_size for p in client.predict_many(val_images * 2, window=16)]
    finally:
        running.stop(grace=0)
    assert len(sizes) == 16
    assert sizes.count(4) >= 8, f"batch sizes {sizes}: streamed items did not fill the batches"


def test_a_request_that_cannot_be_normalised_fails_alone(batch_repository, val_images):
    package = ModelPackage.open(batch_repository / MODEL)
    batcher = DynamicBatcher("isolation", Predictor(package.card, create_backend("onnx", package)),
                             max_batch_size=4, max_queue_delay_ms=200, max_queue_size=8)
    try:
        good = batcher.submit(read_rgb(val_images[0]))
        broken = np.zeros((360, 480, 2), np.uint8)  # two channels: normalisation cannot run on it
        with pytest.raises(ValueError, match="height x width x 3"):
            batcher.submit(broken)  # on the caller's thread, before it could join the batch
        logits = good.result(timeout=120).logits
        assert logits.shape == (package.card.num_classes, 360, 480)
    finally:
        batcher.stop()


class FailsOnBatchesOf:
    """The real ONNX Runtime backend, except that a forward pass over ``size`` images fails."""

    def __init__(self, backend, size: int) -> None:
        self.backend, self.size = backend, size
        self.name, self.device = backend.name, backend.device

    def run(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == self.size:
            raise RuntimeError(f"forward pass over {len(batch)} images failed")
        return self.backend.run(batch)


def test_a_failing_forward_pass_fails_only_its_own_batch(batch_repository, val_images):
    package = ModelPackage.open(batch_repository / MODEL)
    backend = FailsOnBatchesOf(create_backend("onnx", package), size=2)
    batcher = DynamicBatcher("isolation", Predictor(package.card, backend),
                             max_batch_size=2, max_queue_delay_ms=2000, max_queue_size=8)
    frame = read_rgb(val_images[0])
    try:
        doomed = [batcher.submit(np.ascontiguousarray(frame[:176, :240])) for _ in range(2)]  # one batch of 2
        other_size = batcher.submit(np.ascontiguousarray(frame[:200, :240]))  # queued meanwhile: its own batch
        for future in doomed:
            with pytest.raises(RuntimeError, match="over 2 images failed"):
                future.result(timeout=120)
        served = other_size.result(timeout=120)
        later = batcher.submit(frame).result(timeout=120)
    finally:
        batcher.stop()
    assert served.batch_size == 1 and served.logits.shape == (package.card.num_classes, 200, 240)
    assert later.logits.shape == (package.card.num_classes, 360, 480)


def test_requests_of_another_size_queued_in_between_are_served_too(batch_repository, val_images):
    """A batch takes the queued requests of its padded size from behind one of another size: every
    request is answered (a batcher that compared queued images element by element died here and
    left every later request waiting)."""
    package = ModelPackage.open(batch_repository / MODEL)
    batcher = DynamicBatcher("mixed", Predictor(package.card, create_backend("onnx", package)),
                             max_batch_size=4, max_queue_delay_ms=1000, max_queue_size=8)
    frame = read_rgb(val_images[0])
    sizes = [(176, 240), (178, 240), (176, 240), (178, 240), (176, 240)]  # padded: 176, 192, 176, 192, 176
    try:
        futures = [batcher.submit(np.ascontiguousarray(frame[:h, :w])) for h, w in sizes]
        results = [future.result(timeout=120) for future in futures]
    finally:
        batcher.stop()
    assert [r.logits.shape[1:] for r in results] == sizes
    assert [r.batch_size for r in results] == [3, 2, 3, 2, 3]


def test_an_image_gets_the_same_answer_whoever_shares_its_batch(batch_repository, val_images):
    """Each request pads its own image to the network's stride, so a smaller image batched with a
    larger one of the same padded size is not padded out to the larger one first."""
    package = ModelPackage.open(batch_repository / MODEL)
    predictor = Predictor(package.card, create_backend("onnx", package))
    batcher = DynamicBatcher("neighbours", predictor, max_batch_size=2, max_queue_delay_ms=5000, max_queue_size=8)
    frame = read_rgb(val_images[0])
    smaller = np.ascontiguousarray(read_rgb(val_images[1])[:170, :230])  # padded to 176x240, as the frame
    try:
        shared = [batcher.submit(image) for image in (np.ascontiguousarray(frame[:176, :240]), smaller)]
        results = [future.result(timeout=120) for future in shared]
    finally:
        batcher.stop()
    assert [r.batch_size for r in results] == [2, 2]
    alone = predictor.logits(smaller)
    assert results[1].logits.shape == alone.shape == (package.card.num_classes, 170, 230)
    np.testing.assert_allclose(results[1].logits, alone, atol=1e-3)


def test_an_error_outside_the_network_fails_its_batch_and_the_model_goes_on(batch_repository, val_images):
    package = ModelPackage.open(batch_repository / MODEL)
    batcher = DynamicBatcher("resilient", Predictor(package.card, create_backend("onnx", package)),
                             max_batch_size=4, max_queue_delay_ms=0, max_queue_size=8)
    frame = read_rgb(val_images[0])

    def caller_check_that_breaks() -> bool:
        raise RuntimeError("the caller check broke")

    try:
        broken = batcher.submit(frame, caller_check_that_breaks)
        with pytest.raises(RuntimeError, match="caller check broke"):
            broken.result(timeout=120)
        assert batcher.submit(frame).result(timeout=120).logits.shape == (package.card.num_classes, 360, 480)
    finally:
        batcher.stop()


def test_a_full_queue_refuses_at_once_with_resource_exhausted(batch_repository, val_images):
    running = _serve(batch_repository, max_queue_size=1, workers=16, stream_workers=1)
    try:
        with PreLabelClient(running.address, timeout=120) as client:
            def call(i: int):
                try:
                    return client.predict(val_images[i % len(val_images)])
                except ResourceExhausted as exc:
                    return exc
            outcomes = _concurrently(12, call)
            refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
            assert refused, "12 concurrent requests against a queue of 1 were all accepted"
            assert "queued" in refused[0].message and "PRELABEL_MAX_QUEUE_SIZE" in refused[0].message
            assert any(not isinstance(o, PrelabelError) for o in outcomes)
            assert client.predict(val_images[0]).mask.shape == (360, 480)  # still serving
    finally:
        running.stop(grace=0)


def test_calls_beyond_what_the_server_admits_are_refused_at_once(batch_repository, val_images):
    """With 2 RPC threads and a model queue of 1 the server admits 3 calls at once; the other 5 of 8
    concurrent calls are refused, not left waiting in gRPC's own queue, which has no bound."""
    assert ServerSettings(workers=4, max_queue_size=10).admitted_rpcs == 14
    assert ServerSettings(workers=4, max_concurrent_rpcs=3).admitted_rpcs == 3
    running = _serve(batch_repository, workers=2, max_queue_size=1, stream_workers=1)
    try:
        with PreLabelClient(running.address, timeout=120) as client:
            def call(i: int):
                try:
                    return client.predict(val_images[i])
                except ResourceExhausted as exc:
                    return exc
            outcomes = _concurrently(8, call)
            refused = [o for o in outcomes if isinstance(o, ResourceExhausted)]
            # 5 over the admission limit, and one more where a third admitted call finds the model's
            # queue of 1 taken while the first call's forward pass runs
            assert 1 <= len(refused) <= 6, f"{len(refused)} of 8 refused with 3 admitted"
            over_admission = [o for o in refused if "PRELABEL_MAX_CONCURRENT_RPCS" in o.message]
            assert len(over_admission) >= len(refused) - 1 and over_admission, [o.message for o in refused]
            assert all("retry later" in o.message for o in refused)
            assert all(o.mask.shape == (360, 480) for o in outcomes if not isinstance(o, ResourceExhausted))
            assert client.predict(val_images[0]).mask.shape == (360, 480)  # still serving
    finally:
        running.stop(grace=0)


def _dropped(model: str) -> float:
    return REGISTRY.get_sample_value("prelabel_dropped_total", {"model": model}) or 0.0


def test_requests_whose_deadline_passed_are_dropped_before_inference(batch_repository, val_images):
    running = _serve(batch_repository, workers=16)
    try:
        before = _dropped(MODEL)
        with PreLabelClient(running.address, timeout=120) as client:
            busy = threading.Thread(target=lambda: _concurrently(4, lambda i: client.predict(val_images[i])))
            busy.start()
            expired = 0
            for path in val_images[4:8]:
                try:
                    client.predict(path, timeout=0.05)
                except PrelabelError as exc:
                    expired += exc.code.name == "DEADLINE_EXCEEDED"
            busy.join()
            assert expired >= 1
            for _ in range(50):  # the worker reaches the expired requests after the busy batch
                if _dropped(MODEL) > before:
                    break
                threading.Event().wait(0.2)
        assert _dropped(MODEL) > before
    finally:
        running.stop(grace=0)


def test_a_cancelled_stream_frees_its_slots(batch_repository, val_images):
    running = _serve(batch_repository, stream_workers=1, max_in_flight_per_stream=2)
    try:
        with PreLabelClient(running.address, timeout=120) as client:
            endless = (val_images[i % len(val_images)] for i in range(1000))
            stream = client.predict_many(endless, window=4)
            assert next(stream).mask.shape == (360, 480)
            stream.close()  # cancels the call
            again = list(client.predict_many(val_images[:3], window=2))
            assert [p.mask.shape for p in again] == [(360, 480)] * 3
        batcher = running.engine.registry.get(MODEL).batcher
        for _ in range(100):
            if batcher.queued() == 0:
                break
            threading.Event().wait(0.1)
        assert batcher.queued() == 0
    finally:
        running.stop(grace=0)


class HeldAtItsFirstPass:
    """The real ONNX Runtime backend, counting its forward passes; the first waits for ``release``,
    so a caller's deadline passes while a tiled image is part way through its tiles."""

    def __init__(self, backend) -> None:
        self.backend, self.passes, self.release = backend, 0, threading.Event()
        self.name, self.device = backend.name, backend.device

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.passes += 1
        if self.passes == 1:
            self.release.wait(120)
        return self.backend.run(batch)


def _requests(model: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("prelabel_requests_total", {"model": model, "outcome": outcome}) or 0.0


def test_a_tiled_request_whose_caller_left_stops_between_forward_passes(model_repository, val_images,
                                                                        small_camvid_png):
    """A large image holds the model for all its tile batches; once its caller has gone it stops
    before the next band of tiles, as the batcher drops a queued request (CANCELLED), instead of
    finishing an image nobody waits for while the requests behind it wait."""
    running = _serve(model_repository)
    served = running.engine.registry.get("deeplab")
    backend = served.predictor.backend = HeldAtItsFirstPass(served.predictor.backend)
    try:
        image = np.ascontiguousarray(np.tile(read_rgb(val_images[0]), (3, 3, 1)))  # 1080x1440: 35 tiles of 256
        fewest = math.ceil(served.predictor.count_tiles(*image.shape[:2]) / served.predictor.tile_batch)

        def ended() -> float:
            return _requests("deeplab", "ok") + _requests("deeplab", "cancelled")

        ended_before, cancelled_before = ended(), _requests("deeplab", "cancelled")
        with PreLabelClient(running.address, timeout=120) as client:
            with pytest.raises(PrelabelError) as expired:
                client.predict(image, model="deeplab", timeout=2)  # passes while its first tile batch is held
            assert expired.value.code.name == "DEADLINE_EXCEEDED"
            backend.release.set()
            for _ in range(600):  # the server finishes the request after its caller has gone
                if ended() > ended_before:
                    break
                threading.Event().wait(0.2)
            passes = backend.passes
            assert passes < fewest, (f"{passes} forward passes ran (the whole image takes {fewest} or more): "
                                     "the model was held after its caller left")
            assert _requests("deeplab", "cancelled") == cancelled_before + 1
            assert client.predict(small_camvid_png, model="deeplab").mask.shape == (101, 133)  # the model is free
    finally:
        backend.release.set()
        running.stop(grace=0)


class SlowTiles:
    """The real ONNX Runtime backend, each batch of tiles made slow, so that a tiled image takes
    seconds; other images' batches run at full speed."""

    def __init__(self, backend, tile_batch_shape: tuple[int, ...]) -> None:
        self.backend, self.tile_batch_shape = backend, tile_batch_shape
        self.name, self.device = backend.name, backend.device
        self.tile_passes = 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[2:] == self.tile_batch_shape:
            self.tile_passes += 1
            threading.Event().wait(0.3)
        return self.backend.run(batch)


def test_small_images_are_served_between_the_tile_batches_of_a_large_one(model_repository, val_images,
                                                                          small_camvid_png):
    """A tiled image held the model for all its tiles: behind a 40-megapixel one, small requests
    waited 49 s (median) or ran out of time."""
    running = _serve(model_repository)
    served = running.engine.registry.get("deeplab")
    tile = served.card.tile_size
    backend = served.predictor.backend = SlowTiles(served.predictor.backend, (tile, tile))
    try:
        image = np.ascontiguousarray(np.tile(read_rgb(val_images[0]), (3, 3, 1)))  # 1080x1440: 35 tiles of 256
        batches = math.ceil(served.predictor.count_tiles(*image.shape[:2]) / served.predictor.tile_batch)
        with PreLabelClient(running.address, timeout=120) as client, ThreadPoolExecutor(1) as pool:
            large = pool.submit(client.predict, image, model="deeplab")
            for _ in range(600):
                if backend.tile_passes:
                    break
                threading.Event().wait(0.05)
            small = client.predict(small_camvid_png, model="deeplab")
            passes_by_then = backend.tile_passes
            assert small.mask.shape == (101, 133)
            assert large.result().mask.shape == image.shape[:2]
        assert passes_by_then < batches, "the small image waited for the whole tiled one"
    finally:
        running.stop(grace=0)


def test_a_request_whose_caller_left_while_the_model_was_held_is_dropped(batch_repository, val_images):
    """The batcher checked callers when it formed a batch, then waited for the model (held here as
    a tiled image holds it) and ran the batch anyway: a request whose deadline had passed was
    served and counted as ok. Its queue time also left out that wait."""
    package = ModelPackage.open(batch_repository / MODEL)
    batcher = DynamicBatcher("held", Predictor(package.card, create_backend("onnx", package)),
                             max_batch_size=2, max_queue_delay_ms=0, max_queue_size=8)
    caller_left = threading.Event()
    frame = read_rgb(val_images[0])
    before = _dropped("held")
    try:
        with batcher.exclusive():  # the model is busy with a tiled image
            leaving = batcher.submit(frame, caller_left.is_set)
            staying = batcher.submit(frame)
            threading.Event().wait(0.5)  # the worker has taken them into a batch and waits for the model
            caller_left.set()
        with pytest.raises(PrelabelError, match="caller went away"):
            leaving.result(timeout=120)
        served = staying.result(timeout=120)
    finally:
        batcher.stop()
    assert _dropped("held") == before + 1
    assert served.batch_size == 1 and served.queue_ms >= 500


def test_stream_items_cancelled_at_shutdown_end_the_stream_without_an_error() -> None:
    """On shutdown the stream executor cancels the items still waiting; the stream then raised
    CancelledError, which the server logged as an unexpected error."""
    from prelabel_server.grpc_api.streaming import process_stream

    release = threading.Event()
    executor = ThreadPoolExecutor(1)

    def handle(item: int) -> int:
        release.wait(30)
        return item

    answers: list[object] = []

    def consume() -> None:
        try:
            answers.extend(process_stream(iter(range(4)), handle, executor, max_in_flight=4))
        except BaseException as exc:  # what the servicer would have raised into gRPC
            answers.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    threading.Event().wait(0.5)  # all four submitted; the first runs, three wait
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    consumer.join(30)
    assert answers == [0]
