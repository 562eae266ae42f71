"""Accelerator failures: a batch that runs out of device memory is retried in halves, an image that
fails alone runs on ONNX Runtime on the CPU, and the model reports the degradation (ModelInfo,
health ``models/<name>/device``, metrics) until the device works again.

No GPU is needed: ``DeviceWithRoomFor`` is a real torch backend (CPU) that raises torch's own
``OutOfMemoryError`` for batches larger than its room, as a full GPU would. The CUDA path itself
is only exercised where a GPU is lent (see docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage
from prelabel_models.backends import create_backend
from prelabel_models.image_files import list_images, read_rgb
from prelabel_models.postprocessing import MapRequest, SegmentationMaps, maps_of_batch
from prelabel_models.predictor import Predictor
from prelabel_proto.errors import ResourceExhausted
from prelabel_server.device_fallback import DeviceFallback, is_device_failure
from prelabel_server.grpc_api.server import start_server
from prelabel_server.settings import ServerSettings
from service_packages import build_package, camvid_card


class DeviceWithRoomFor:
    """A torch backend whose "device" holds ``room`` images; larger calls raise CUDA's OOM error."""

    def __init__(self, backend, room: int) -> None:
        self.backend, self.room, self.calls, self.methods, self.map_batches = backend, room, [], [], []
        self.name, self.device = backend.name, "cuda:0"
        self.weights_digest = backend.weights_digest  # the weights its CPU fallback's graphs must come from
        self.maps_on_device = True  # as on a GPU: the server asks it for maps, not logits

    def _checked(self, images: int) -> None:
        self.calls.append(images)
        if images > self.room:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {images * 512} MiB (room for {self.room})")

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._checked(len(batch))
        self.methods.append("run")
        return self.backend.run(batch)

    def run_maps(self, batch: np.ndarray, temperature: float, requests: list[MapRequest]) -> list[SegmentationMaps]:
        self._checked(len(batch))
        self.methods.append("run_maps")
        self.map_batches.append(batch)
        return self.backend.run_maps(batch, temperature, requests)

    def head(self, features: np.ndarray, masks: np.ndarray) -> np.ndarray:
        self._checked(len(masks))
        return self.backend.head(features, masks)

    def features(self, batch: np.ndarray) -> np.ndarray:
        self._checked(len(batch))
        return self.backend.features(batch)


class Events:
    def __init__(self) -> None:
        self.degraded: list[str] = []
        self.recovered = 0

    def fallback(self, primary, package: ModelPackage) -> DeviceFallback:
        return DeviceFallback(primary, lambda: create_backend("onnx", package, device="cpu"),
                              on_degraded=self.degraded.append, on_recovered=self._recovered)

    def _recovered(self) -> None:
        self.recovered += 1


@pytest.fixture(scope="module")
def package(model_repository: Path) -> ModelPackage:
    return ModelPackage.open(model_repository / "deeplab")


@pytest.fixture(scope="module")
def batch(package: ModelPackage, camvid_root: Path) -> np.ndarray:
    predictor = Predictor(package.card, create_backend("torch", package, device="cpu"))
    images = [read_rgb(p)[:128, :160] for p in list_images(camvid_root / "val")[:4]]
    return np.stack([predictor.model_input(image) for image in images])


def test_device_failures_are_told_from_other_errors():
    assert is_device_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_device_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_device_failure(RuntimeError("Given groups=1, weight of size [64, 3, 7, 7], expected input"))
    assert not is_device_failure(ValueError("CUDA"))  # not the runtime's error type


def test_an_oversized_batch_is_split_until_it_fits(package, batch):
    reference = create_backend("torch", package, device="cpu").run(batch)
    device, events = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=1), Events()
    logits = events.fallback(device, package).run(batch)
    assert device.calls == [4, 2, 1, 1, 2, 1, 1]
    assert np.allclose(logits, reference, atol=1e-4)  # batch size changes float rounding only
    assert events.degraded == [], "every image fitted on the device: no CPU fallback"


def test_an_image_that_fails_alone_runs_on_the_cpu_and_the_model_reports_it(package, batch):
    reference = create_backend("torch", package, device="cpu").run(batch[:2])
    device, events = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=0), Events()
    backend = events.fallback(device, package)
    logits = backend.run(batch[:2])
    assert np.abs(logits - reference).max() < 1e-2  # ONNX Runtime's answer, within export parity
    assert len(events.degraded) == 2 and "OutOfMemoryError" in events.degraded[0]
    assert "running on ONNX Runtime on the CPU" in backend.degradation
    device.room = 4  # the device has memory again: the next call runs there and clears the state
    backend.run(batch[:2])
    assert backend.degradation == "" and events.recovered == 1


def test_maps_computed_on_the_device_are_split_and_fall_back_too(package, batch):
    requests = [MapRequest(128, 160, measure, keep) for measure, keep in
                [("entropy", False), ("margin", True), ("entropy", False), ("least_confidence", False)]]
    temperature = package.card.temperature
    reference = maps_of_batch(create_backend("torch", package, device="cpu").run(batch), temperature, requests)
    device, events = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=1), Events()
    backend = events.fallback(device, package)
    assert backend.maps_on_device
    maps = backend.run_maps(batch, temperature, requests)
    assert device.calls == [4, 2, 1, 1, 2, 1, 1] and events.degraded == []
    # the batch and its halves are views of the caller's batch, never copies of it (66 MB for 32 frames)
    assert all(np.shares_memory(part, batch) for part in device.map_batches)
    assert [m.probabilities is not None for m in maps] == [False, True, False, False]
    for got, expected in zip(maps, reference, strict=True):
        assert np.mean(got.mask == expected.mask) > 0.999  # batch size changes float rounding only
        assert np.abs(got.uncertainty - expected.uncertainty).max() < 1e-3
    device.room = 0  # each image alone fails: ONNX Runtime on the CPU answers, maps derived on the host
    maps = backend.run_maps(batch[2:], temperature, requests[2:])
    assert device.calls[-3:] == [2, 1, 1] and len(events.degraded) == 2
    for got, expected in zip(maps, reference[2:], strict=True):
        assert np.mean(got.mask == expected.mask) > 0.99  # within export parity
        assert np.abs(got.uncertainty - expected.uncertainty).mean() < 1e-2


def test_mc_dropout_samples_are_split_too(tmp_path, camvid_root):
    card = camvid_card("mc", "DeepLabV3Plus", "resnet18", output_stride=16, head_dropout=0.3)
    dropout_package = build_package(tmp_path / "mc", card, list_images(camvid_root / "val")[:2])
    image = read_rgb(list_images(camvid_root / "val")[0])[:128, :160]
    reference = Predictor(card, create_backend("torch", dropout_package, device="cpu")).mc_dropout_logits(image, 8)
    device, events = DeviceWithRoomFor(create_backend("torch", dropout_package, device="cpu"), room=2), Events()
    samples = Predictor(card, events.fallback(device, dropout_package)).mc_dropout_logits(image, 8)
    assert device.calls == [1, 8, 4, 2, 2, 4, 2, 2]  # the trunk once, then the 8 masks in halves
    assert np.allclose(samples, reference, atol=1e-4)


def test_other_errors_are_not_retried(package, batch):
    device, events = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=8), Events()
    with pytest.raises(RuntimeError, match="expected input"):
        events.fallback(device, package).run(batch[:, :2])  # two channels: a bug, not the device
    assert device.calls == [4] and events.degraded == []


def test_without_an_onnx_file_the_request_fails_with_resource_exhausted(tmp_path, camvid_root, batch):
    card = camvid_card("no-onnx", "DeepLabV3Plus", "resnet18", output_stride=16)
    package = build_package(tmp_path / "no-onnx", card, list_images(camvid_root / "val")[:2], onnx=False)
    device, events = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=0), Events()
    with pytest.raises(ResourceExhausted, match="no CPU fallback.*prelabel export"):
        events.fallback(device, package).run(batch[:1])


def test_the_server_reports_degradation_in_model_info_health_and_metrics(model_repository, small_camvid_png):
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository,
                                          backend="torch", device="cpu"))
    try:
        registry = running.engine.registry
        served = registry.get("deeplab")
        device = DeviceWithRoomFor(served.predictor.backend, room=0)
        served.predictor.backend = registry.with_cpu_fallback(served, device, ModelPackage.open(served.folder))
        fallbacks_before = REGISTRY.get_sample_value("prelabel_device_fallbacks_total", {"model": "deeplab"}) or 0.0
        with PreLabelClient(running.address, timeout=120) as client, grpc.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def status(service: str) -> int:
                return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

            assert status("models/deeplab/device") == health_pb2.HealthCheckResponse.SERVING
            prediction = client.predict(small_camvid_png, model="deeplab")
            assert prediction.mask.shape == prediction.uncertainty.shape
            info = client.model("deeplab")
            assert "OutOfMemoryError" in info.degradation and "CPU" in info.degradation
            assert status("models/deeplab") == health_pb2.HealthCheckResponse.SERVING
            assert status("models/deeplab/device") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert REGISTRY.get_sample_value("prelabel_model_degraded", {"model": "deeplab"}) == 1.0
            assert REGISTRY.get_sample_value("prelabel_device_fallbacks_total", {"model": "deeplab"}) > fallbacks_before

            device.room = 8
            client.predict(small_camvid_png, model="deeplab")
            assert client.model("deeplab").degradation == ""
            assert status("models/deeplab/device") == health_pb2.HealthCheckResponse.SERVING
            assert REGISTRY.get_sample_value("prelabel_model_degraded", {"model": "deeplab"}) == 0.0
    finally:
        running.stop(grace=0)


def test_the_server_asks_a_device_for_maps_unless_told_not_to(model_repository, small_camvid_png):
    answers = {}
    for device_maps, batching in ((True, True), (True, False), (False, True)):
        running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository, backend="torch",
                                              device="cpu", device_maps=device_maps, batching=batching))
        try:
            served = running.engine.registry.get("deeplab")
            device = served.predictor.backend = DeviceWithRoomFor(served.predictor.backend, room=8)
            with PreLabelClient(running.address, timeout=120) as client:
                answers[device_maps, batching] = client.predict(small_camvid_png, model="deeplab",
                                                                outputs=("mask", "uncertainty"))
            assert device.methods == (["run_maps"] if device_maps else ["run"])
        finally:
            running.stop(grace=0)
    reference = answers[False, True]  # logits copied back, maps on the host
    for answer in (answers[True, True], answers[True, False]):
        assert np.mean(answer.mask == reference.mask) > 0.999
        assert np.abs(answer.uncertainty - reference.uncertainty).max() <= 1 / 255 + 1e-6  # 8-bit PNG steps
        # the summary from the device's class sums: over the image's own pixels, as on the host
        assert answer.summary.mean_uncertainty == pytest.approx(reference.summary.mean_uncertainty, abs=1e-4)
        for mine, theirs in zip(answer.summary.classes, reference.summary.classes, strict=True):
            assert mine.pixel_fraction == pytest.approx(theirs.pixel_fraction, abs=1e-3)
            assert mine.mean_confidence == pytest.approx(theirs.mean_confidence, abs=1e-3)
            assert mine.mean_uncertainty == pytest.approx(theirs.mean_uncertainty, abs=1e-3)


def test_the_cpu_fallback_does_not_need_mc_dropouts_graphs_to_serve_plain_requests(tmp_path, repo_root, batch):
    """The fallback is made only once the GPU fails. Checking MC dropout's graphs then failed it
    for every request when one of those files was being rewritten at that moment."""
    from prelabel_server.registry import ModelRegistry, ServedModel

    source, copy = repo_root / "models" / "camvid", tmp_path / "camvid"
    copy.mkdir()
    for file in source.iterdir():
        (copy / file.name).symlink_to(file)
    (copy / "model.head.onnx").unlink()
    (copy / "model.head.onnx").write_bytes(b"half a copy")
    package = ModelPackage.open(copy)
    registry = ModelRegistry(ServerSettings(model_repository=tmp_path, backend="onnx"))
    served = ServedModel(name="camvid", folder=copy, fingerprint=())
    device = DeviceWithRoomFor(create_backend("torch", package, device="cpu"), room=0)
    backend = registry.with_cpu_fallback(served, device, package)
    assert backend.run(batch[:1]).shape[:2] == (1, package.card.num_classes)
    assert "CPU" in served.degradation


def test_the_fallback_serves_only_graphs_of_the_weights_the_device_loaded(model_repository, tmp_path, caplog,
                                                                         small_camvid_png):
    """The fallback, made only when the device fails, checked its graphs against the weights on disk
    then: a fine-tuned version copied into the folder (weights and graphs, no reload yet) was served
    by the CPU under the old version's name. And graphs that record no weights were found unusable
    only when the device failed."""
    import onnx
    from safetensors.torch import load_file, save_file

    from prelabel_models.export import export_onnx

    ModelPackage.open(model_repository / "deeplab").copy_to(tmp_path / "repository" / "deeplab")
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=tmp_path / "repository",
                                          backend="torch", device="cpu"))
    try:
        registry = running.engine.registry
        served = registry.get("deeplab")
        package = ModelPackage.open(served.folder)
        device = DeviceWithRoomFor(served.predictor.backend, room=0)
        served.predictor.backend = registry.with_cpu_fallback(served, device, package)
        assert "no CPU fallback" not in caplog.text
        weights = load_file(package.weights_path)
        save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in weights.items()}, package.weights_path)
        export_onnx(package)  # the next version's files, all consistent, copied in
        with PreLabelClient(running.address, timeout=120) as client:
            with pytest.raises(ResourceExhausted, match="exported from other weights"):
                client.predict(small_camvid_png, model="deeplab")
        graph = onnx.load(str(package.onnx_path))
        del graph.metadata_props[:]
        onnx.save(graph, str(package.onnx_path))
        registry.with_cpu_fallback(served, device, package)
        assert "deeplab has no CPU fallback should its device fail" in caplog.text
    finally:
        running.stop(grace=0)
