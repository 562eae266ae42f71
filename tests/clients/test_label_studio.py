"""``prelabel predict --label-studio`` against the real test server, on CamVid images: Label Studio
tasks whose brush regions decode (with Label Studio's own converter) to each class's pixels in the
palette mask, a labelling config whose tag names and labels the regions use, and the usage errors
that must stop a job before its first image rather than after its last."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from label_studio_converter.brush import decode_rle
from PIL import Image

from prelabel_client import PreLabelClient
from prelabel_client.batch import predict_files
from prelabel_client.cli import main as prelabel_main
from prelabel_client.label_studio import DEFAULT_IMAGE_URL, LabelStudioError, check_ready


def _brush_mask(region: dict) -> np.ndarray:
    """Label Studio's RLE holds RGBA pixels: painted ones opaque (a faint alpha would barely show)."""
    height, width = region["original_height"], region["original_width"]
    alpha = decode_rle(region["value"]["rle"]).reshape(height, width, 4)[..., 3]
    assert set(np.unique(alpha)) <= {0, 255}
    return alpha == 255


def test_tasks_hold_each_class_as_a_brush_region_of_its_pixels(onnx_client: PreLabelClient, camvid_val_images,
                                                               tmp_path: Path) -> None:
    (tmp_path / "in" / "day 2").mkdir(parents=True)
    (tmp_path / "in" / "a.png").symlink_to(camvid_val_images[0])
    (tmp_path / "in" / "day 2" / "b.png").symlink_to(camvid_val_images[3])
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    images = [tmp_path / "in" / "a.png", broken, tmp_path / "in" / "day 2" / "b.png"]
    out = tmp_path / "out"
    report = predict_files(onnx_client, images, out, label_studio="https://data.example/camvid/{path}")
    assert (report.written, report.failed) == (2, 1)
    assert report.label_studio_files == (out / "label_studio.json", out / "label_studio_config.xml")
    assert report.coco_file is None and not (out / "coco.json").exists()  # only what was asked for
    assert "Label Studio tasks" in report.describe()

    config = ElementTree.parse(out / "label_studio_config.xml").getroot()
    brush = config.find("BrushLabels")
    assert (config.find("Image").get("name"), config.find("Image").get("value")) == ("image", "$image")
    assert (brush.get("name"), brush.get("toName")) == ("tag", "image")
    classes = onnx_client.model().classes
    assert [label.get("value") for label in brush] == [name for _, name, _ in classes]
    assert brush[0].get("background") == "#{:02x}{:02x}{:02x}".format(*classes[0][2])

    tasks = json.loads((out / "label_studio.json").read_text())
    assert [task["data"]["image"] for task in tasks] == ["https://data.example/camvid/a.png",
                                                         "https://data.example/camvid/day%202/b.png"]
    written = [entry for entry in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
               if "error" not in entry]
    for task, entry in zip(tasks, written):
        mask = np.asarray(Image.open(entry["mask"]))  # the palette PNG's indices are the class ids
        prediction, = task["predictions"]
        assert prediction["model_version"] == f"{onnx_client.model().name} v{onnx_client.model().version}"
        regions = prediction["result"]
        labels = [region["value"]["brushlabels"] for region in regions]
        assert labels == [[classes[class_id][1]] for class_id in np.unique(mask)]
        for region, class_id in zip(regions, np.unique(mask)):
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
            assert (region["original_height"], region["original_width"]) == mask.shape
            np.testing.assert_array_equal(_brush_mask(region), mask == class_id)
            assert 0 < region["score"] <= 1
        areas = [(mask == class_id).sum() for class_id in np.unique(mask)]
        weighted = sum(region["score"] * area for region, area in zip(regions, areas)) / sum(areas)
        assert prediction["score"] == pytest.approx(weighted, abs=1e-3)  # the image's mean confidence


def test_a_resumed_job_writes_the_kept_images_tasks_too(onnx_client: PreLabelClient, camvid_val_images,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    predict_files(onnx_client, camvid_val_images[:2], out, label_studio=DEFAULT_IMAGE_URL)
    (out / "label_studio.json").unlink()  # killed before the end: each image's JSON holds its masks
    report = predict_files(onnx_client, camvid_val_images[:3], out, label_studio=DEFAULT_IMAGE_URL, resume=True)
    assert (report.kept, report.written) == (2, 1)
    tasks = json.loads((out / "label_studio.json").read_text())
    # Label Studio serves ?d=FOLDER/FILE from a storage on FOLDER below its document root (checked
    # with Label Studio 1.23.2: a storage on the document root itself is refused)
    folder = camvid_val_images[0].parent.name
    assert [task["data"]["image"] for task in tasks] == [f"/data/local-files/?d={folder}/{image.name}"
                                                         for image in camvid_val_images[:3]]
    assert all(task["predictions"][0]["result"] for task in tasks)
    # The kept images' regions were read from their JSONs, not made again: they are the same.
    summary = (out / f"{camvid_val_images[0].stem}.json").read_text()
    saved = json.loads(summary)["label_studio"]
    written = tasks[0]["predictions"][0]["result"]
    assert [region["value"]["rle"] for region in written] == \
        [list(base64.b64decode(region["value"]["rle_base64"])) for region in saved]
    assert [{k: v for k, v in region.items() if k not in ("id", "value")} for region in written] == \
        [{k: v for k, v in region.items() if k != "value"} for region in saved]
    assert len(summary) < 150_000  # as lists of numbers, one a line, the regions made it 330 kB


def test_a_resumed_job_sends_again_the_images_written_without_label_studio_regions(
        onnx_client: PreLabelClient, camvid_val_images, tmp_path: Path) -> None:
    out = tmp_path / "out"
    predict_files(onnx_client, camvid_val_images[:2], out, coco=True)
    report = predict_files(onnx_client, camvid_val_images[:2], out, label_studio=DEFAULT_IMAGE_URL, resume=True)
    assert (report.kept, report.written) == (0, 2)
    assert len(json.loads((out / "label_studio.json").read_text())) == 2


def test_an_image_url_without_its_path_is_refused_before_any_request(onnx_server, camvid_val_images, tmp_path,
                                                                      capsys) -> None:
    with pytest.raises(LabelStudioError, match=r"must hold \{path\}"):
        check_ready("https://data.example/camvid/", tmp_path)
    with pytest.raises(LabelStudioError, match=r"common folder is /, which has no name for \{root\}"):
        check_ready(DEFAULT_IMAGE_URL, Path("/"))  # the URLs would have read ?d=/tmp/...
    with pytest.raises(SystemExit) as stopped:
        prelabel_main(["predict", str(camvid_val_images[0]), "--out", str(tmp_path / "out"), "--label-studio",
                       "--image-url", "https://data.example/", "--server", onnx_server.address])
    assert stopped.value.code == 2
    assert "must hold {path}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_name_that_is_not_utf8_keeps_its_bytes_in_the_url(onnx_client: PreLabelClient, camvid_val_images,
                                                            tmp_path: Path) -> None:
    """quote() raised UnicodeEncodeError after every image had been written, and no task was."""
    folder = tmp_path / "in"
    folder.mkdir()
    name = "caf\udce9.png"  # b"caf\xe9.png" on disk, as os.fsdecode gives it
    (folder / name).symlink_to(camvid_val_images[0])
    report = predict_files(onnx_client, [folder / name], tmp_path / "out", label_studio=DEFAULT_IMAGE_URL)
    assert report.written == 1
    tasks = json.loads((tmp_path / "out" / "label_studio.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=in/caf%E9.png"
