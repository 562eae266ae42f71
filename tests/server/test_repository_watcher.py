"""The watched model repository: a rewritten package is reloaded once its files have settled, a new
package is loaded, and a broken rewrite leaves the previous version serving."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage, ModelPackageError
from prelabel_models.card import CARD_FILE
from prelabel_proto.errors import FailedPrecondition, ModelNotFound
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
    registry, watcher = _watch(repository)
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


def test_a_package_added_later_does_not_take_over_the_default(repository: Path, model_repository: Path,
                                                              caplog: pytest.LogCaptureFixture):
    """Without PRELABEL_DEFAULT_MODEL the default was the first ready name on every request: a new
    package named "aaa" took every request that names no model, silently."""
    registry, watcher = _watch(repository)
    assert registry.default_name == "watched"
    ModelPackage.open(model_repository / "unet").copy_to(repository / "aaa", name="aaa")
    watcher.poll()
    assert watcher.poll() == ["aaa"] and registry.ready("aaa")
    assert registry.default_name == "watched"
    (repository / "watched" / "model.onnx").write_bytes(b"not a graph")  # the default's reload fails: it keeps serving
    _rewrite_card(repository / "watched", version="2")
    watcher.poll()
    watcher.poll()
    assert registry.default_name == "watched"
    registry.close()
    assert not [r for r in caplog.records if "default model is now" in r.getMessage()]


def test_a_new_package_that_cannot_be_read_is_listed_failed_and_a_failed_one_removed_goes(
        repository: Path, model_repository: Path):
    """A new folder with a broken card was in no listing until a restart (only the log said so);
    a failed duplicate whose folder was deleted stayed NOT_SERVING until a restart."""
    registry, watcher = _watch(repository)
    _broken_card(repository / "broken")
    ModelPackage.open(model_repository / "unet").copy_to(repository / "copy", name="watched")  # a duplicate name
    watcher.poll()
    watcher.poll()
    states = {m.name: (m.state, m.error) for m in registry.all()}
    assert states["broken"][0] == "failed" and "card.json" in states["broken"][1]
    assert states["watched@copy"][0] == "failed" and states["watched"][0] == "ready"
    shutil.rmtree(repository / "copy")
    shutil.rmtree(repository / "broken")
    watcher.poll()
    assert [m.name for m in registry.all()] == ["watched"]
    registry.close()


# --- Packages the watcher must not trip over: copies of models/camvid (large files linked, card rewritten) ---

def _camvid_package(repo_root: Path, folder: Path, **card: object) -> Path:
    """``models/camvid`` in ``folder`` with ``card`` fields changed: its large files linked, its card a real file."""
    source = repo_root / "models" / "camvid"
    if not (source / CARD_FILE).is_file():
        pytest.skip(f"no model package at {source}")
    folder.mkdir()
    for path in source.iterdir():
        if path.name != CARD_FILE:
            (folder / path.name).symlink_to(path)
    (folder / CARD_FILE).write_text(json.dumps(json.loads((source / CARD_FILE).read_text()) | card))
    return folder


def _watch(repository: Path) -> tuple[ModelRegistry, RepositoryWatcher]:
    registry = ModelRegistry(ServerSettings(model_repository=repository, backend="onnx", batching=False))
    registry.load_all()
    watcher = RepositoryWatcher(registry, repository, interval_seconds=60)
    assert watcher.poll() == []
    return registry, watcher


def _broken_card(folder: Path) -> None:
    """A package folder whose card is cut short: it cannot be read."""
    folder.mkdir()
    (folder / CARD_FILE).write_text(f'{{"name": "{folder.name}"')


def _errors_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def test_a_new_folder_reusing_a_served_name_is_a_failed_duplicate(tmp_path: Path, repo_root: Path,
                                                                   caplog: pytest.LogCaptureFixture):
    """As at startup: the copy is listed failed under its own name, once; the served model is not reloaded."""
    _camvid_package(repo_root, tmp_path / "camvid")
    registry, watcher = _watch(tmp_path)
    serving = registry.ready("camvid")
    _camvid_package(repo_root, tmp_path / "camvid2")  # the same card: name 'camvid'
    for _ in range(4):
        assert watcher.poll() == []
    assert registry.ready("camvid") is serving, "the served model was reloaded"
    assert [(m.name, m.state) for m in registry.all()] == [("camvid", "ready"), ("camvid@camvid2", "failed")]
    error = registry.get("camvid@camvid2").error
    assert "duplicate model name 'camvid'" in error and str(tmp_path / "camvid") in error
    assert len(_errors_about(caplog, "camvid2")) == 1, "logged once, not on every poll"
    registry.close()


def test_a_card_that_is_not_utf8_is_reported_once_and_holds_back_no_other_update(
        tmp_path: Path, repo_root: Path, caplog: pytest.LogCaptureFixture):
    _camvid_package(repo_root, tmp_path / "camvid")
    registry, watcher = _watch(tmp_path)
    latin1 = _camvid_package(repo_root, tmp_path / "aaa", name="aaa")  # sorts before camvid
    card = json.loads((latin1 / CARD_FILE).read_text()) | {"description": "Straße modèle"}
    (latin1 / CARD_FILE).write_bytes(json.dumps(card, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ModelPackageError, match="not UTF-8"):
        ModelPackage.open(latin1)
    _rewrite_card(tmp_path / "camvid", version="2")
    watcher.poll()
    assert watcher.poll() == ["camvid"]
    assert registry.ready("camvid").card.version == "2"
    assert watcher.poll() == [] and watcher.poll() == []
    errors = _errors_about(caplog, "aaa")
    assert len(errors) == 1 and "not UTF-8" in errors[0], errors
    registry.close()


def _roads_v2_failed_at_startup(repo_root: Path, repository: Path) -> tuple[ModelRegistry, RepositoryWatcher]:
    """Folder ``roads-v2``, card name ``roads``: the card is invalid when the server starts."""
    _camvid_package(repo_root, repository / "roads-v2", name="roads", tile_overlap=9999)
    registry, watcher = _watch(repository)
    assert [(m.name, m.state) for m in registry.all()] == [("roads-v2", "failed")]
    card = repository / "roads-v2" / CARD_FILE
    card.write_text(json.dumps(json.loads(card.read_text()) | {"tile_overlap": 64}))  # fixed
    return registry, watcher


def test_a_fixed_package_leaves_no_failed_entry_under_its_folder_name(tmp_path: Path, repo_root: Path):
    registry, watcher = _roads_v2_failed_at_startup(repo_root, tmp_path)
    watcher.poll()
    assert watcher.poll() == ["roads"]
    assert [(m.name, m.state) for m in registry.all()] == [("roads", "ready")]
    registry.close()


def test_reloading_a_failed_folder_name_loads_that_package_once(tmp_path: Path, repo_root: Path):
    registry, _ = _roads_v2_failed_at_startup(repo_root, tmp_path)
    served, previous = registry.reload("roads-v2")  # the name ListModels showed
    assert (served.name, served.state, previous) == ("roads", "ready", "")
    assert [(m.name, m.state) for m in registry.all()] == [("roads", "ready")]
    with pytest.raises(ModelNotFound):  # filed under its card's name, not a second time under the folder's
        registry.get("roads-v2")
    assert registry.reload("roads")[1] == "1"
    assert [(m.name, m.state) for m in registry.all()] == [("roads", "ready")]
    registry.close()


def test_health_forgets_a_failed_name_once_its_fixed_package_is_served(tmp_path: Path, repo_root: Path):
    """The health names of an entry gone from the registry once answered their last status for
    ever: ``models/roads-v2`` stayed NOT_SERVING after the package loaded as ``roads``."""
    _camvid_package(repo_root, tmp_path / "roads-v2", name="roads", tile_overlap=9999)
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=tmp_path, backend="onnx"))
    try:
        with PreLabelClient(running.address, timeout=60) as client, grpc.insecure_channel(running.address) as channel:
            def status(service: str) -> int:
                return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service)).status

            assert status("models/roads-v2") == health_pb2.HealthCheckResponse.NOT_SERVING
            card = tmp_path / "roads-v2" / CARD_FILE
            card.write_text(json.dumps(json.loads(card.read_text()) | {"tile_overlap": 64}))
            assert client.reload_model("roads-v2")[0].name == "roads"
            assert status("models/roads") == health_pb2.HealthCheckResponse.SERVING
            assert status("models/roads-v2") == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    finally:
        running.stop(grace=0)


def test_reloading_a_package_whose_folder_is_gone_says_so(tmp_path: Path, repo_root: Path):
    """Once an INTERNAL error (the fingerprint read the missing folder outside any handling)."""
    _camvid_package(repo_root, tmp_path / "roads", name="roads")
    registry, _ = _watch(tmp_path)
    shutil.rmtree(tmp_path / "roads")
    with pytest.raises(FailedPrecondition, match="is gone"):
        registry.reload("roads")
    assert registry.get("roads").state == "ready"  # the version loaded before keeps serving
    registry.close()


def test_a_broken_card_in_a_folder_named_like_a_served_model_shows_its_own_error(repository: Path,
                                                                                 model_repository: Path):
    """It was listed as a duplicate name, and the card's own error was only in the log."""
    ModelPackage.open(model_repository / "unet").copy_to(repository / "x", name="roads")
    registry, watcher = _watch(repository)
    _broken_card(repository / "roads")
    watcher.poll()
    watcher.poll()
    failed = {m.name: m.error for m in registry.all() if m.state == "failed"}
    assert list(failed) == ["roads@roads"] and "card.json" in failed["roads@roads"] and "duplicate" not in failed["roads@roads"]
    assert registry.ready("roads").folder == repository / "x"
    registry.close()


def test_a_failed_folder_moved_out_and_back_is_listed_again(repository: Path, tmp_path_factory: pytest.TempPathFactory):
    """Moving keeps the files' times: the watcher took the returning folder for one already tried."""
    registry, watcher = _watch(repository)
    _broken_card(repository / "broken")
    watcher.poll()
    watcher.poll()
    assert "broken" in {m.name for m in registry.all() if m.state == "failed"}
    aside = tmp_path_factory.mktemp("aside") / "broken"
    shutil.move(str(repository / "broken"), str(aside))
    watcher.poll()
    assert "broken" not in {m.name for m in registry.all()}
    shutil.move(str(aside), str(repository / "broken"))
    watcher.poll()
    watcher.poll()
    assert "broken" in {m.name for m in registry.all() if m.state == "failed"}
    registry.close()
