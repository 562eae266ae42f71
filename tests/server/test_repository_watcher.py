"""The watched model repository: a rewritten package is reloaded once its files have settled, a new
package is loaded, and a broken rewrite leaves the previous version serving."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage
from prelabel_server.grpc_api.server import start_server
from prelabel_server.registry import ModelRegistry
from prelabel_server.settings import ServerSettings
from prelabel_server.watcher import RepositoryWatcher


@pytest.fixture()
def repository(tmp_path: Path, model_repository: Path) -> Path:
    ModelPackage.open(model_repository / "unet").copy_to(tmp_path / "watched", name="watched")
    return tmp_path


def _rewrite_card(folder: Path, **fields: object) -> None:
    ModelPackage.open(folder).card.model_copy(update=fields).save(folder)


def test_a_change_is_loaded_only_once_the_package_has_settled(repository: Path, model_repository: Path):
    registry = ModelRegistry(ServerSettings(model_repository=repository, backend="onnx", batching=False))
    registry.load_all()
    watcher = RepositoryWatcher(registry, repository, interval_seconds=60)
    assert watcher.poll() == []  # first look: nothing changed since loading
    _rewrite_card(repository / "watched", version="2")
    assert watcher.poll() == [], "changed since the last poll: it may still be being copied"
    assert watcher.poll() == ["watched"]
    assert registry.ready("watched").card.version == "2"
    assert watcher.poll() == []

    ModelPackage.open(model_repository / "unet").copy_to(repository / "added", name="added")
    watcher.poll()
    assert watcher.poll() == ["added"] and registry.ready("added").card.version == "1"

    (repository / "watched" / "model.onnx").write_bytes(b"not a graph")
    _rewrite_card(repository / "watched", version="3")
    watcher.poll()
    assert watcher.poll() == [], "the broken version did not load"
    assert registry.ready("watched").card.version == "2", "the previous version keeps serving"
    assert watcher.poll() == [], "a version that failed is not retried until its files change again"
    registry.close()


def test_the_server_picks_up_a_new_version_by_itself(repository: Path, small_camvid_png: bytes):
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=repository, backend="onnx",
                                          repository_poll_seconds=0.1))
    try:
        with PreLabelClient(running.address, timeout=120) as client:
            assert client.predict(small_camvid_png, model="watched").model_version == "1"
            _rewrite_card(repository / "watched", version="2")
            deadline = time.monotonic() + 30
            while client.model("watched").version != "2":
                assert time.monotonic() < deadline, "the server did not reload the changed package within 30 s"
                time.sleep(0.1)
            assert client.predict(small_camvid_png, model="watched").model_version == "2"
    finally:
        running.stop(grace=0)
