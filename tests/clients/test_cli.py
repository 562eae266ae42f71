"""The `prelabel` command against the running test server: `predict` writes a palette mask, an
overlay, a heat map and a JSON summary per image plus a manifest, and reports what failed;
`models` lists the repository."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import RunningServer
from service_packages import CAMVID_CLASSES
from service_support import NUM_CLASSES

PRELABEL = str(Path(sys.executable).with_name("prelabel"))


def _prelabel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PRELABEL, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def predicted(onnx_server: RunningServer, camvid_val_images: list[Path], tmp_path_factory: pytest.TempPathFactory):
    """`prelabel predict` on two CamVid images and one missing file."""
    out = tmp_path_factory.mktemp("predict-out")
    images = [camvid_val_images[0], out.parent / "does-not-exist.png", camvid_val_images[1]]
    result = _prelabel("predict", *map(str, images), "--out", str(out), "--server", onnx_server.address)
    return result, images, out


def test_a_missing_file_is_reported_as_failed_and_the_others_are_written(predicted) -> None:
    result, images, out = predicted
    assert result.returncode == 1, result.stderr
    assert "2 images pre-annotated" in result.stdout
    assert f"FAILED {images[1]}" in result.stdout
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [entry["image"] for entry in manifest] == list(map(str, images))
    assert "error" in manifest[1] and "does-not-exist.png" in manifest[1]["error"]
    assert set(manifest[0]) == {"image", "mask", "overlay", "uncertainty", "summary", "model", "model_version",
                                "measure", "uncertainty_threshold"}
    assert (manifest[0]["model"], manifest[0]["measure"]) == ("deeplab", "entropy")


def test_the_mask_is_a_palette_png_of_class_ids(predicted, onnx_client: PreLabelClient) -> None:
    _, images, out = predicted
    with Image.open(out / f"{images[0].stem}_mask.png") as png:
        assert png.mode == "P" and png.size == (480, 360)
        mask = np.asarray(png)
        palette = png.getpalette()[: 3 * NUM_CLASSES]
    assert mask.max() < NUM_CLASSES
    assert [tuple(palette[i: i + 3]) for i in range(0, len(palette), 3)] == [c for _, c in CAMVID_CLASSES]
    np.testing.assert_array_equal(mask, onnx_client.predict(images[0]).mask)  # what the API returns


def test_overlay_heat_map_and_summary_are_written(predicted) -> None:
    _, images, out = predicted
    for image in (images[0], images[2]):
        with Image.open(out / f"{image.stem}_overlay.png") as overlay, Image.open(image) as original:
            assert overlay.mode == "RGB" and overlay.size == original.size
            assert not np.array_equal(np.asarray(overlay), np.asarray(original.convert("RGB")))
        with Image.open(out / f"{image.stem}_uncertainty.png") as heat:
            assert heat.mode == "RGB" and heat.size == (480, 360)
        summary = json.loads((out / f"{image.stem}.json").read_text())
        assert (summary["model"], summary["backend"]) == ("deeplab", "onnx")
        shares = [c["pixel_fraction"] for c in summary["summary"]["classes"]]
        assert len(shares) == NUM_CLASSES and sum(shares) == pytest.approx(1, abs=1e-4)
        assert 0 <= summary["summary"]["mean_uncertainty"] <= 1
        assert set(summary["files"]) == {"mask", "overlay", "uncertainty"}
    assert not (out / "does-not-exist_mask.png").exists()


def test_predict_takes_folders_at_every_depth_and_lists_of_paths(onnx_server: RunningServer,
                                                                  camvid_val_images: list[Path], tmp_path: Path) -> None:
    """A dataset too large for the command line (20-40 thousand paths) is given as a folder or a
    list; before, a folder failed as an input that is no file."""
    dataset = tmp_path / "dataset"
    (dataset / "day2" / "cam1").mkdir(parents=True)
    for index, relative in enumerate(["b.png", "day2/cam1/a.png", "day2/c.jpg"]):
        (dataset / relative).symlink_to(camvid_val_images[index])
    (dataset / "notes.txt").write_text("not an image")
    (dataset / "._b.png").write_bytes(b"macOS resource fork")  # hidden: not one of the dataset's images
    more = tmp_path / "more"
    more.mkdir()
    (more / "d.png").symlink_to(camvid_val_images[6])
    listed = tmp_path / "more.txt"  # written on Windows, with a byte order mark; a folder listed too
    listed.write_bytes(f"\ufeff{camvid_val_images[5]}\r\n\r\n{tmp_path / 'missing.png'}  \r\n{more}\r\n".encode())
    out = dataset / "results"  # inside the folder: a second run must not take the first one's outputs
    command = ("predict", str(dataset), "--images-from", str(listed), "--out", str(out), "--server", onnx_server.address)
    result = _prelabel(*command)
    assert result.returncode == 1, result.stderr  # the listed missing file fails alone
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    inputs = [str(dataset / "b.png"), str(dataset / "day2/c.jpg"), str(dataset / "day2/cam1/a.png"),
              str(camvid_val_images[5]), str(tmp_path / "missing.png"), str(more / "d.png")]
    assert [entry["image"] for entry in manifest] == inputs
    assert ["error" in entry for entry in manifest] == [False, False, False, False, True, False]
    again = _prelabel(*command, "--resume")
    assert "5 of them kept" in again.stdout, again.stdout
    resumed = [json.loads(line)["image"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert resumed == [image for image in inputs if "missing" not in image] + [str(tmp_path / "missing.png")]
    from_stdin = subprocess.run([PRELABEL, "predict", "--images-from", "-", "--out", str(tmp_path / "out2"),
                                 "--server", onnx_server.address], input=f"{camvid_val_images[5]}\n",
                                capture_output=True, text=True, timeout=300)
    assert from_stdin.returncode == 0 and "1 image pre-annotated" in from_stdin.stdout, from_stdin.stderr


def test_models_lists_the_repository(onnx_server: RunningServer) -> None:
    result = _prelabel("models", "--server", onnx_server.address)
    assert result.returncode == 0, result.stderr
    rows = (re.match(r"([* ]) (\S+) +v", line) for line in result.stdout.splitlines())
    lines = {row[2]: row.string for row in rows if row}  # one row per model; "*" marks the default
    assert sorted(lines) == ["broken", "broken-card", "deeplab", "unet", "unet-tile1024"]
    assert lines["deeplab"].startswith("*") and "DeepLabV3Plus/resnet18" in lines["deeplab"]
    assert "ready" in lines["unet"] and "onnx" in lines["unet"] and "11 classes" in lines["unet"]
    assert "failed" in lines["broken"] and "missing.onnx" in lines["broken"]


@pytest.mark.parametrize("service,status,code", [("", "SERVING", 0), ("models/deeplab", "SERVING", 0),
                                                  ("models/broken", "NOT_SERVING", 1)])
def test_health_prints_the_status_and_exits_0_only_when_serving(onnx_server: RunningServer, service: str,
                                                                status: str, code: int) -> None:
    """What the Docker images' HEALTHCHECK runs (their old inline check hard-wired port 50051)."""
    result = _prelabel("health", "--service", service, "--server", onnx_server.address, "--timeout", "10")
    assert (result.stdout.strip(), result.returncode) == (status, code), result.stderr


def test_health_of_no_server_fails(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    result = _prelabel("health", "--server", address, "--timeout", "3")
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr and "Traceback" not in result.stderr
    assert "is `prelabel serve` running at that address" in result.stderr, result.stderr


def test_predict_refuses_a_folder_that_does_not_exist_before_the_job_starts(tmp_path: Path) -> None:
    """It made --out and its manifest, printed "0 images pre-annotated" and exited 1."""
    out = tmp_path / "out"
    result = _prelabel("predict", str(tmp_path / "no-such-folder"), "--out", str(out), "--server", "127.0.0.1:1")
    assert result.returncode == 2, result.stderr
    assert "no such folder" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    result = _prelabel("select", str(tmp_path / "no-such-pool"), "--budget", "1", "--out", str(tmp_path / "s.json"))
    assert result.returncode == 2 and "is not a folder" in result.stderr, result.stderr


def test_health_of_a_service_the_server_never_had_says_what_names_exist(onnx_server: RunningServer) -> None:
    result = _prelabel("health", "--service", "deeplab", "--server", onnx_server.address, "--timeout", "10")
    assert result.returncode == 1 and "no health service 'deeplab'" in result.stderr and "models/NAME" in result.stderr


def test_predict_takes_the_uncertainty_threshold(onnx_server: RunningServer, camvid_val_images: list[Path],
                                                 tmp_path: Path) -> None:
    """Without it, the summaries of mutual_information and mc_variance (values well under the
    default 0.5) always said no pixel was uncertain."""
    fractions = {}
    out = tmp_path / "out"
    for threshold in ("0.05", "0.95"):  # a resumed job keeps only what was made at its own threshold
        result = _prelabel("predict", str(camvid_val_images[0]), "--out", str(out), "--server", onnx_server.address,
                           "--uncertainty-threshold", threshold, "--resume")
        assert result.returncode == 0 and "kept" not in result.stdout, result.stdout + result.stderr
        summary = json.loads((out / f"{camvid_val_images[0].stem}.json").read_text())["summary"]
        assert summary["uncertainty_threshold"] == pytest.approx(float(threshold))
        fractions[threshold] = summary["uncertain_fraction"]
    assert fractions["0.05"] > fractions["0.95"]
    refused = _prelabel("predict", str(camvid_val_images[0]), "--out", str(tmp_path / "no"),
                        "--uncertainty-threshold", "1.5")
    assert refused.returncode == 2 and "more than 0 and less than 1" in refused.stderr
