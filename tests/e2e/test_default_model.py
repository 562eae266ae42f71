"""The shipped default model, served as a user runs it: the project's own model repository,
ONNX Runtime on the CPU, real CamVid val images scored against their labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from prelabel_client import PreLabelClient
from prelabel_models import ModelPackage
from prelabel_server.grpc_api.server import RunningServer, start_server
from prelabel_server.settings import ServerSettings, default_model_repository

DEFAULT_PACKAGE = default_model_repository() / "camvid"


@pytest.fixture(scope="module")
def default_server() -> Iterator[RunningServer]:
    package = ModelPackage.open(DEFAULT_PACKAGE)
    if not package.onnx_path.is_file():
        pytest.fail(f"{package.onnx_path} is missing: run `make test` (it exports it) or `prelabel export {DEFAULT_PACKAGE}`")
    running = start_server(ServerSettings(port=0, backend="onnx"))
    yield running
    running.stop(grace=0)


@pytest.fixture(scope="module")
def default_client(default_server: RunningServer) -> Iterator[PreLabelClient]:
    with PreLabelClient(default_server.address, timeout=300) as client:
        yield client


def _label(camvid_root: Path, image: Path) -> np.ndarray:
    return cv2.imread(str(camvid_root / "valannot" / image.name), cv2.IMREAD_GRAYSCALE)


def test_the_default_model_is_served_from_onnx(default_client: PreLabelClient):
    info = default_client.model()
    assert (info.name, info.state, info.backend, info.is_default) == ("camvid", "ready", "onnx", True)
    assert [name for _, name, _ in info.classes][:3] == ["Sky", "Building", "Pole"]


def test_its_masks_match_the_labels_and_uncertainty_points_at_the_errors(default_client, camvid_root, camvid_val_images):
    correct = total = 0
    wrong_uncertainty, right_uncertainty = [], []
    for image in camvid_val_images[::20]:
        prediction = default_client.predict(image, uncertainty_format="raw_float16")
        label = _label(camvid_root, image)
        scored = label != 11
        hits = (prediction.mask == label) & scored
        correct += int(hits.sum())
        total += int(scored.sum())
        wrong_uncertainty.append(prediction.uncertainty[scored & ~hits])
        right_uncertainty.append(prediction.uncertainty[hits])
    assert correct / total > 0.65, f"pixel accuracy {correct / total:.3f}"  # val as a whole: see README
    assert np.concatenate(wrong_uncertainty).mean() > 2 * np.concatenate(right_uncertainty).mean()


def test_mc_dropout_on_the_default_model(default_client: PreLabelClient, camvid_val_images: list[Path]):
    entropy = default_client.predict(camvid_val_images[7], uncertainty_format="raw_float16")
    mutual = default_client.predict(camvid_val_images[7], measure="mutual_information", mc_samples=8,
                                    uncertainty_format="raw_float16")
    assert np.isfinite(mutual.uncertainty).all() and 0 <= mutual.uncertainty.min() <= mutual.uncertainty.max() <= 1
    assert mutual.uncertainty.max() > 0 and not np.allclose(mutual.uncertainty, entropy.uncertainty, atol=1e-3)
    assert (mutual.mask == entropy.mask).mean() > 0.95  # the mean of 8 samples stays close to one pass


def test_mc_dropout_graphs_cut_short_are_the_packages_error(tmp_path: Path, camvid_val_images: list[Path]):
    """A package whose trunk graph was cut short (a copy interrupted, a full disk) reloaded as ready,
    and every MC request got INTERNAL with a traceback in the log. Now the reload fails and the
    version already loaded keeps serving; MC requests say which files to export again."""
    import shutil

    from prelabel_proto.errors import FailedPrecondition

    package = shutil.copytree(DEFAULT_PACKAGE, tmp_path / "camvid")
    trunk = package / "model.trunk.onnx"
    if not trunk.is_file():
        pytest.fail(f"{DEFAULT_PACKAGE / trunk.name} is missing: run `make test` (it exports it)")
    running = start_server(ServerSettings(port=0, backend="onnx", model_repository=tmp_path))
    try:
        with PreLabelClient(running.address, timeout=300) as client:
            trunk.write_bytes(trunk.read_bytes()[:1_000_000])
            with pytest.raises(FailedPrecondition, match="model.trunk.onnx.*cannot be loaded.*prelabel export"):
                client.reload_model("camvid")
            assert client.predict(camvid_val_images[0]).mask.shape == (360, 480)  # the loaded version serves
            # and never MC dropout from files rewritten after it loaded: they gave version 1 other numbers
            with pytest.raises(FailedPrecondition, match="graphs in .* changed after this version loaded: reload"):
                client.predict(camvid_val_images[0], measure="mutual_information", mc_samples=2)
    finally:
        running.stop(grace=0)


def test_a_batch_job_s_heat_maps_of_mutual_information_are_not_black(default_client: PreLabelClient,
                                                                      camvid_val_images: list[Path], tmp_path: Path):
    """Its values peak near 0.01: on the [0, 1] scale, in 8 bits, the heat map was black (4 levels)."""
    import json

    from prelabel_client.batch import predict_files

    report = predict_files(default_client, camvid_val_images[7:8], tmp_path, measure="mutual_information")
    assert report.written == 1
    summary = json.loads((tmp_path / f"{camvid_val_images[7].stem}.json").read_text())
    assert 0 < summary["heat_map_scale"] < 0.2
    heat = cv2.imread(summary["files"]["uncertainty"])
    assert len(np.unique(heat.reshape(-1, 3), axis=0)) > 50 and heat.max() > 200
    entropy = predict_files(default_client, camvid_val_images[7:8], tmp_path / "entropy")
    assert entropy.written == 1
    assert json.loads((tmp_path / "entropy" / f"{camvid_val_images[7].stem}.json").read_text())["heat_map_scale"] == 1.0
