"""The COCO file a batch job builds: spooled to disk image by image, written a piece at a time
and whole or not at all."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from prelabel_client.coco import CocoFile, json_array
from prelabel_client.outputs import write_whole

CLASSES = [(0, "Sky", (128, 128, 128)), (1, "Road", (128, 64, 128))]


def _entry(classes: int, counts: str = "PXYZ") -> dict:
    return {"height": 4, "width": 6, "annotations": [
        {"category_id": c + 1, "segmentation": {"size": [4, 6], "counts": counts}, "area": 3, "bbox": [0, 0, 1, 3],
         "iscrowd": 0, "score": 0.5} for c in range(classes)]}


def test_json_array_writes_valid_json_for_none_one_and_many_items():
    for items in ([], [1], [{"a": "é"}, [2, 3], "x"]):
        assert json.loads(b"".join(json_array(items))) == items


def test_an_empty_job_writes_a_coco_file_with_empty_lists(tmp_path: Path):
    coco = CocoFile(CLASSES, [], "m v1", spool_dir=tmp_path)
    coco.write(tmp_path / "coco.json")
    document = json.loads((tmp_path / "coco.json").read_text())
    assert (document["images"], document["annotations"], document["licenses"]) == ([], [], [])
    assert [c["name"] for c in document["categories"]] == ["Sky", "Road"]


def test_images_read_back_in_order_with_ids_that_go_on_across_reads(tmp_path: Path):
    images = [tmp_path / "in" / "a.png", tmp_path / "in" / "sub" / "b.png", tmp_path / "in" / "c.png"]
    coco = CocoFile(CLASSES, images, "m v1", spool_dir=tmp_path)
    coco.add(images[0], _entry(2))
    coco.add(images[0], _entry(1))  # the same file again: listed once
    assert [record["file_name"] for record, _, _ in coco.images()] == ["a.png"]
    coco.add(images[1], _entry(1))  # after a read: appended, not written over
    coco.add(images[2], _entry(2))
    coco.write(tmp_path / "coco.json")
    document = json.loads((tmp_path / "coco.json").read_text())
    assert [(i["id"], i["file_name"]) for i in document["images"]] == [(1, "a.png"), (2, "sub/b.png"), (3, "c.png")]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in document["annotations"]] == \
        [(1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 3, 1), (5, 3, 2)]
    assert document["info"]["model"] == "m v1" and document["info"]["image_root"] == str(tmp_path / "in")


def test_the_masks_are_kept_on_disk_not_in_memory(tmp_path: Path):
    """A job of a million images held every image's masks (18 kB each at 360x480) in memory. Here
    200 images of 100 kB of RLE each go to the spool file; memory grows by the names alone."""
    images = [tmp_path / f"{i:04d}.png" for i in range(200)]
    coco = CocoFile(CLASSES, images, spool_dir=tmp_path)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for image in images:
            coco.add(image, _entry(2, counts="x" * 50_000))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2_000_000, f"{grown} bytes held for 20 MB of masks"
    assert sum(len(a) for _, a, _ in coco.images()) == 400


def test_a_write_cut_short_leaves_the_previous_file_whole_and_no_partial_file(tmp_path: Path):
    """Files are written beside their name and then renamed: a job killed in the middle of its
    export (SIGKILL, no Python to clean up) left a truncated label_studio.json before."""
    target = tmp_path / "coco.json"
    target.write_text('{"complete": true}')

    def pieces():
        yield b'{"images": ['
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_whole(target, pieces())
    assert json.loads(target.read_text()) == {"complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]
    write_whole(target, iter([b'{"images": ', b"[]}"]))
    assert json.loads(target.read_text()) == {"images": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]
