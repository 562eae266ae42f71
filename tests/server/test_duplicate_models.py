"""Two packages that claim the same model name: the first (by folder name) serves, the second is
reported failed under its own name and does not take the first down, in ListModels or in health."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage
from prelabel_server.grpc_api.server import start_server
from prelabel_server.registry import ModelRegistry
from prelabel_server.settings import ServerSettings
from prelabel_server.watcher import RepositoryWatcher


@pytest.fixture(scope="module")
def duplicates(model_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    repository = tmp_path_factory.mktemp("duplicates")
    unet = ModelPackage.open(model_repository / "unet")
    unet.copy_to(repository / "a-unet")
    unet.copy_to(repository / "b-unet")
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=repository, backend="onnx"))
    yield running
    running.stop(grace=0)


def test_the_duplicate_is_listed_failed_under_its_own_name(duplicates, small_camvid_png: bytes) -> None:
    with PreLabelClient(duplicates.address, timeout=60) as client:
        models = {m.name: m for m in client.models()}
        assert client.predict(small_camvid_png, model="unet").model == "unet"
    assert sorted(models) == ["unet", "unet@b-unet"]
    assert models["unet"].state == "ready"
    duplicate = models["unet@b-unet"]
    assert duplicate.state == "failed" and "duplicate model name 'unet'" in duplicate.error
    assert "a-unet" in duplicate.error


def test_health_keeps_the_first_serving(duplicates) -> None:
    with grpc.insecure_channel(duplicates.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        statuses = {name: check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
                    for name in ("", "models/unet", "models/unet@b-unet")}
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert statuses == {"": serving, "models/unet": serving, "models/unet@b-unet": not_serving}


def test_the_watcher_leaves_a_startup_duplicate_and_the_first_alone(model_repository: Path, tmp_path: Path) -> None:
    """The duplicate counts as tried: polling neither retries it nor reloads the model it duplicates."""
    unet = ModelPackage.open(model_repository / "unet")
    unet.copy_to(tmp_path / "a-unet")
    unet.copy_to(tmp_path / "b-unet")
    registry = ModelRegistry(ServerSettings(model_repository=tmp_path, backend="onnx", batching=False))
    registry.load_all()
    serving = registry.ready("unet")
    watcher = RepositoryWatcher(registry, tmp_path, interval_seconds=60)
    for _ in range(3):
        assert watcher.poll() == []
    assert registry.ready("unet") is serving
    assert [(m.name, m.state) for m in registry.all()] == [("unet", "ready"), ("unet@b-unet", "failed")]
    registry.close()
