"""Hot reload: a new model version is swapped in under load without losing a request, and a
version that fails to load leaves the old one serving."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import onnx
import pytest
from safetensors.torch import load_file, save_file

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage, ModelPackageError
from prelabel_models.backends.onnx_backend import OnnxBackend
from prelabel_models.export import export_onnx
from prelabel_proto.errors import FailedPrecondition, ModelNotFound
from prelabel_server.grpc_api.server import start_server
from prelabel_server.settings import ServerSettings

MODEL = "swappable"


def _set_card_field(folder: Path, **fields: object) -> None:
    card = json.loads((folder / "card.json").read_text())
    card.update(fields)
    (folder / "card.json").write_text(json.dumps(card))


@pytest.fixture()
def reload_server(tmp_path: Path, model_repository: Path):
    repository = tmp_path / "repository"
    ModelPackage.open(model_repository / "deeplab").copy_to(repository / MODEL, name=MODEL, version="1")
    running = start_server(ServerSettings(port=0, model_repository=repository, backend="onnx", stream_workers=2))
    yield running, repository / MODEL
    running.stop(grace=0)


def test_a_stream_keeps_going_while_the_model_is_replaced(reload_server, camvid_val_images):
    running, folder = reload_server
    images = [camvid_val_images[i % len(camvid_val_images)] for i in range(24)]
    versions: list[str] = []
    halfway = threading.Event()

    def stream() -> None:
        with PreLabelClient(running.address, timeout=300) as client:
            for prediction in client.predict_many(images, window=4):
                versions.append(prediction.model_version)
                if len(versions) == 6:
                    halfway.set()

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert halfway.wait(300)
    _set_card_field(folder, version="2")
    with PreLabelClient(running.address) as admin:
        info, previous = admin.reload_model(MODEL)
    streaming.join(300)
    assert (previous, info.version, info.state) == ("1", "2", "ready")
    assert len(versions) == len(images), "a request was lost during the swap"
    assert versions[0] == "1" and versions[-1] == "2"
    assert sum(a != b for a, b in zip(versions, versions[1:])) == 1, versions  # changed exactly once


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(reload_server, camvid_val_images):
    running, folder = reload_server
    _set_card_field(folder, version="3", onnx="missing.onnx")
    with PreLabelClient(running.address) as client:
        with pytest.raises(FailedPrecondition, match="still serving version '1'"):
            client.reload_model(MODEL)
        prediction = client.predict(camvid_val_images[0], model=MODEL)
        assert prediction.model_version == "1"
        assert client.model(MODEL).state == "ready"
        with pytest.raises(ModelNotFound):
            client.reload_model("no-such-model")


def test_a_package_renamed_in_its_card_serves_under_its_new_name_alone(reload_server, camvid_val_images):
    """The old name went on serving from the same folder beside the new one, for good: two loaded
    copies, and reloading the old name reloaded the new one."""
    running, folder = reload_server
    _set_card_field(folder, name="renamed", version="2")
    with PreLabelClient(running.address) as admin:
        info, _ = admin.reload_model(MODEL)
        assert (info.name, info.version, info.state) == ("renamed", "2", "ready")
        assert [model.name for model in admin.models()] == ["renamed"]
        assert admin.predict(camvid_val_images[0], model="renamed").model_version == "2"
        with pytest.raises(ModelNotFound):
            admin.predict(camvid_val_images[0], model=MODEL)


def test_new_weights_are_not_served_from_the_old_onnx_files(reload_server, camvid_val_images):
    """The README's loop (fine-tune, copy the new package over the served one, reload) kept serving
    the old ONNX files beside the new weights, and the reload said it had worked."""
    running, folder = reload_server
    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor * 1.5 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              folder / "model.safetensors")  # "fine-tuned": copied in without `prelabel export`
    _set_card_field(folder, version="2")
    with PreLabelClient(running.address) as client:
        before = client.predict(camvid_val_images[0], model=MODEL).mask
        with pytest.raises(FailedPrecondition, match=r"model.onnx was exported from other weights than "
                                                     r"model.safetensors.*prelabel export"):
            client.reload_model(MODEL)
        assert client.model(MODEL).version == "1"  # still serving, as before
        export_onnx(ModelPackage.open(folder))
        info, previous = client.reload_model(MODEL)
        assert (previous, info.version, info.state) == ("1", "2", "ready")
        assert (client.predict(camvid_val_images[0], model=MODEL).mask != before).any()


def _forget_weights(graph_path: Path) -> None:
    graph = onnx.load(str(graph_path))
    del graph.metadata_props[:]
    onnx.save(graph, str(graph_path))


def test_onnx_files_that_do_not_say_which_weights_they_came_from_are_refused(tmp_path, repo_root):
    """An export by an earlier prelabel (or another tool) cannot be told apart from a stale one."""
    package = ModelPackage.open(repo_root / "models" / "camvid").copy_to(tmp_path / "old-export")  # MC graphs too
    _forget_weights(package.trunk_onnx_path)  # MC dropout's graphs must come from the same weights too
    with pytest.raises(ModelPackageError, match="MC dropout's graphs .* exported from other weights"):
        OnnxBackend(package)
    _forget_weights(package.onnx_path)
    with pytest.raises(ModelPackageError, match="does not record which weights it was exported from"):
        OnnxBackend(package)
    package.weights_path.unlink()  # a package of ONNX files alone has nothing to compare them with
    _forget_weights(package.head_onnx_path)
    assert OnnxBackend(package).session is not None


def test_mc_graphs_left_by_an_earlier_export_do_not_block_a_model_without_mc_dropout(tmp_path, repo_root,
                                                                                   model_repository):
    """A package without head dropout failed to load for the MC graphs an earlier export had left
    (from other weights), and exporting it again did not remove them."""
    package = ModelPackage.open(model_repository / "deeplab").copy_to(tmp_path / "no-dropout")
    assert package.card.head_dropout == 0
    for graph in ("model.trunk.onnx", "model.head.onnx"):
        (package.folder / graph).write_bytes((repo_root / "models" / "camvid" / graph).read_bytes())
    assert OnnxBackend(package).session is not None
    export_onnx(package)
    assert not package.trunk_onnx_path.exists() and not package.head_onnx_path.exists()


def test_new_files_under_the_same_version_are_served_with_a_warning(reload_server, caplog):
    """Weights copied in and exported in the served folder kept its card, and so version 1: the
    reload said "1 -> 1", and `predict --resume` kept the old model's results as the new one's."""
    running, folder = reload_server
    weights = load_file(folder / "model.safetensors")
    save_file({name: tensor * 1.5 if tensor.is_floating_point() else tensor for name, tensor in weights.items()},
              folder / "model.safetensors")
    export_onnx(ModelPackage.open(folder))
    with PreLabelClient(running.address) as client:
        info, previous = client.reload_model(MODEL)
    assert (previous, info.version) == ("1", "1")
    assert f"model {MODEL} serves changed files under the same version '1'" in caplog.text
