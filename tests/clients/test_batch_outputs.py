"""`predict_files` (what `prelabel predict` runs) against the real test server, on real files:
every input gets its own outputs, no input is ever written over, a file that cannot be written is a
reported failure, an output path that is a file is refused before any request, and a job whose
stream dies still leaves a manifest naming what was done and what was not."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import prelabel_client.batch as batch
from prelabel_client import PreLabelClient
from prelabel_client.batch import OutputFolderError, predict_files
from prelabel_client.cli import main as prelabel_main
from prelabel_models.image_files import read_image
from prelabel_proto.errors import PrelabelError, ResourceExhausted
from prelabel_server.grpc_api.server import RunningServer, start_server
from prelabel_server.settings import ServerSettings

FILE_KEYS = ("mask", "overlay", "uncertainty", "summary")
# what made the files: a resumed job keeps only its own
STAMP_KEYS = ("model", "model_version", "measure", "uncertainty_threshold")


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _manifest(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _listed_files(entry: dict[str, str]) -> list[str]:
    return [entry[key] for key in FILE_KEYS if key in entry]


def test_same_stems_in_different_folders_get_their_own_outputs(onnx_client: PreLabelClient, small_camvid_rgb,
                                                               tmp_path: Path) -> None:
    images = [_write(tmp_path / "dup" / "a" / "img.png", small_camvid_rgb),
              _write(tmp_path / "dup" / "b" / "img.png", small_camvid_rgb[::-1].copy()),
              _write(tmp_path / "dup" / "a" / "img.jpg", small_camvid_rgb[:, ::-1].copy()),
              _write(tmp_path / "dup" / "other.png", small_camvid_rgb)]
    out = tmp_path / "out"
    report = predict_files(onnx_client, images, out)
    assert (report.written, report.failed) == (4, 0)
    manifest = _manifest(out)
    assert [entry["image"] for entry in manifest] == list(map(str, images))
    files = [path for entry in manifest for path in _listed_files(entry)]
    assert len(files) == 16 and len(set(files)) == 16, "two inputs share an output file"
    for entry in manifest:
        assert set(entry) == {"image", *FILE_KEYS, *STAMP_KEYS}
        assert all(Path(path).is_file() for path in _listed_files(entry))
        assert json.loads(Path(entry["summary"]).read_text())["image"] == entry["image"]
    # each overlay is made from its own input (the inputs differ: flipped copies)
    for entry, image in zip(manifest, images):
        original = cv2.imread(str(image), cv2.IMREAD_COLOR).astype(np.int16)
        blended = cv2.imread(entry["overlay"], cv2.IMREAD_COLOR).astype(np.int16)
        others = [cv2.imread(str(other), cv2.IMREAD_COLOR).astype(np.int16) for other in images if other != image]
        own_distance = np.abs(blended - original).mean()
        assert all(own_distance < np.abs(blended - other).mean() for other in others if other.shape == original.shape
                   and np.abs(other - original).mean() > 5)
    # a unique stem keeps its readable name; repeated stems are told apart deterministically
    assert Path(manifest[3]["mask"]).name == "other_mask.png"
    assert all(Path(entry["mask"]).name.startswith("img-") for entry in manifest[:3])
    assert _manifest(out) == manifest and predict_files(onnx_client, images, out).written == 4
    assert _manifest(out) == manifest, "the names changed between two runs of the same job"


def test_an_input_named_like_another_inputs_output_is_never_modified(onnx_client: PreLabelClient, small_camvid_rgb,
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "ow"
    images = [_write(folder / "a.png", small_camvid_rgb), _write(folder / "a_mask.png", small_camvid_rgb[::-1].copy())]
    before = {image: image.read_bytes() for image in images}
    report = predict_files(onnx_client, images, folder)  # results written beside the inputs
    assert (report.written, report.failed) == (2, 0)
    assert {image: image.read_bytes() for image in images} == before, "an input file was written over"
    manifest = _manifest(folder)
    assert [entry["image"] for entry in manifest] == list(map(str, images))
    files = [path for entry in manifest for path in _listed_files(entry)]
    assert len(set(files)) == 8 and not {Path(path).resolve() for path in files} & {i.resolve() for i in images}
    assert all(Path(path).is_file() for path in files)


def test_an_output_that_cannot_be_written_is_a_reported_failure(onnx_client: PreLabelClient, small_camvid_rgb,
                                                                tmp_path: Path) -> None:
    long_stem = "L" * 245  # a legal name (249 bytes); "<stem>_overlay.png" is 257, over the usual 255
    images = [_write(tmp_path / "in" / f"{long_stem}.png", small_camvid_rgb),
              _write(tmp_path / "in" / "short.png", small_camvid_rgb)]
    out = tmp_path / "out"
    report = predict_files(onnx_client, images, out)
    assert (report.written, report.failed) == (1, 1)
    assert str(images[0]) in report.failures and "not written" in report.failures[str(images[0])]
    assert f"FAILED {images[0]}" in report.describe()
    manifest = _manifest(out)
    assert [entry["image"] for entry in manifest] == list(map(str, images))
    assert set(manifest[0]) == {"image", "error"} and "not written" in manifest[0]["error"]
    assert set(manifest[1]) == {"image", *FILE_KEYS, *STAMP_KEYS}
    assert all(Path(path).is_file() for entry in manifest for path in _listed_files(entry))
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["manifest.jsonl", "short_mask.png", "short_overlay.png", "short_uncertainty.png", "short.json"])


def _closed_port_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_an_output_path_that_is_a_file_is_refused_before_any_request(small_camvid_rgb, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    image = _write(tmp_path / "img.png", small_camvid_rgb)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    address = _closed_port_address()  # nothing listens: any request would fail UNAVAILABLE, not INVALID_ARGUMENT
    with PreLabelClient(address, timeout=10, retries=1) as client:
        with pytest.raises(OutputFolderError, match="afile.*is a file"):
            predict_files(client, [image], afile)
    assert afile.read_text() == "not a folder"
    assert prelabel_main(["predict", str(image), "--out", str(afile), "--server", address]) == 2
    error = capsys.readouterr().err
    assert error.startswith("prelabel predict: cannot write results to") and "is a file" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_a_stream_lost_mid_job_leaves_a_manifest_of_what_was_done_and_what_was_not(
        model_repository: Path, small_camvid_rgb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = [_write(tmp_path / "in" / f"frame{index:02d}.png", np.roll(small_camvid_rgb, index * 7, axis=1))
              for index in range(24)]
    out = tmp_path / "out"
    running = start_server(ServerSettings(host="127.0.0.1", port=0, model_repository=model_repository, backend="onnx"))
    stopped = False
    real_write = batch.write_prediction

    def write_then_kill_the_server(*args, **kwargs):  # the server goes away once the first result is in
        nonlocal stopped
        written = real_write(*args, **kwargs)
        if not stopped:
            stopped = True
            running.stop(grace=0)
        return written

    monkeypatch.setattr(batch, "write_prediction", write_then_kill_the_server)
    try:
        with PreLabelClient(running.address, timeout=60, retries=1) as client:
            with pytest.raises(PrelabelError) as raised:
                predict_files(client, images, out, coco=True)
    finally:
        if not stopped:
            running.stop(grace=0)
    manifest = _manifest(out)
    assert [entry["image"] for entry in manifest] == list(map(str, images)), "an image is missing from the manifest"
    finished = [entry for entry in manifest if "error" not in entry]
    failed = [entry for entry in manifest if "error" in entry]
    assert finished and failed, (len(finished), len(failed))
    # results that arrived behind an unanswered image are written too: each failure is the stream's error
    assert all(raised.value.message in entry["error"] for entry in failed)
    for entry in finished:
        assert set(entry) == {"image", *FILE_KEYS, *STAMP_KEYS} and all(Path(path).is_file() for path in _listed_files(entry))
    assert all(entry["error"].startswith("not processed: ") for entry in failed)
    assert raised.value.__notes__ == [f"stopped with {len(failed)} of 24 images not processed ({len(finished)} written, "
                                      f"0 failed; each listed in {out / 'manifest.jsonl'}): run the same command "
                                      "with --resume to finish"]  # what `prelabel predict` prints under the error
    coco = json.loads((out / "coco.json").read_text())  # written for the images done before the stream died
    assert [image["file_name"] for image in coco["images"]] == [Path(entry["image"]).name for entry in finished]


def test_odd_inputs_get_an_overlay_that_lines_up_with_their_mask(onnx_client: PreLabelClient, small_camvid_rgb,
                                                                 tmp_path: Path) -> None:
    """A file name that is not valid UTF-8 crashed the process (cv2.imread, exit 139). A JPEG turned
    by its EXIF orientation got no overlay at all: the server segmented the stored pixels, the
    overlay read them turned, and the shapes differed."""
    from PIL import Image

    odd_name = tmp_path / "in" / os.fsdecode(b"caf\xe9.png")
    odd_name.parent.mkdir()
    odd_name.write_bytes(cv2.imencode(".png", cv2.cvtColor(small_camvid_rgb, cv2.COLOR_RGB2BGR))[1].tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    turned = tmp_path / "in" / "turned.jpg"
    Image.fromarray(small_camvid_rgb).save(turned, quality=100, exif=exif.tobytes())
    out = tmp_path / "out"
    report = predict_files(onnx_client, [odd_name, turned], out)
    assert (report.written, report.failed) == (2, 0)
    masks = [read_image(Path(entry["mask"]), cv2.IMREAD_UNCHANGED) for entry in _manifest(out)]
    overlays = [read_image(Path(entry["overlay"])) for entry in _manifest(out)]
    assert [overlay.shape[:2] for overlay in overlays] == [mask.shape[:2] for mask in masks]
    assert masks[1].shape[:2] == small_camvid_rgb.shape[1::-1]


def _predict_command(*args: str, **env: str) -> list[str]:
    return [sys.executable, "-m", "prelabel_client.cli", "predict", *args]


def test_a_fifo_among_the_inputs_fails_alone_instead_of_blocking_the_job(onnx_client: PreLabelClient, small_camvid_rgb,
                                                                         tmp_path: Path) -> None:
    """Reading a FIFO blocked the job for ever (--timeout did not apply), and later images never ran."""
    images = [_write(tmp_path / "in" / "a.png", small_camvid_rgb), tmp_path / "in" / "b.png",
              _write(tmp_path / "in" / "e.png", small_camvid_rgb)]
    os.mkfifo(images[1])
    reports = []
    worker = threading.Thread(target=lambda: reports.append(predict_files(onnx_client, images, tmp_path / "out")),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():
        with open(images[1], "wb"):  # let the blocked reader go before failing
            pass
    assert not worker.is_alive(), "the job blocked on the FIFO"
    assert (reports[0].written, reports[0].failed) == (2, 1)
    assert "is not a regular file" in reports[0].failures[str(images[1])]


def _limit_file_size() -> None:
    """In the child: files over 20 kB cannot be written (EFBIG), as on a disk that fills up mid-write."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_write_cut_short_leaves_no_truncated_file(onnx_server: RunningServer, camvid_val_images: list[Path],
                                                    tmp_path: Path) -> None:
    """On a full disk the failed image's overlay stayed behind, truncated, under its output name."""
    out = tmp_path / "out"
    run = subprocess.run(_predict_command(str(camvid_val_images[0]), "--out", str(out), "--server", onnx_server.address),
                         capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert run.returncode == 1 and "not written" in run.stdout, run.stdout + run.stderr
    assert [entry["error"].split(":")[0] for entry in _manifest(out)] == ["not written"]
    assert sorted(path.name for path in out.iterdir()) == ["manifest.jsonl"], "a partial output was left"


def test_sigterm_lists_every_image_not_processed(onnx_server: RunningServer, small_camvid_rgb, tmp_path: Path) -> None:
    """SIGTERM (timeout, systemd, Kubernetes) ended the job without a word, and the manifest left
    out every image not processed; Ctrl-C already listed them. The job stops without writing its
    COCO file (for half a million images that took longer than any grace period): the resumed
    run writes it."""
    images = [_write(tmp_path / "in" / f"frame{index:03d}.png", np.roll(small_camvid_rgb, index, axis=1))
              for index in range(150)]
    out = tmp_path / "out"
    command = _predict_command(*map(str, images), "--out", str(out), "--server", onnx_server.address, "--coco")
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").read_text().count("\n") >= 2):
        assert time.monotonic() < deadline and job.poll() is None, "the job never got going"
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, error = job.communicate(timeout=120)
    assert job.returncode == 143 and "prelabel predict: terminated" in error
    manifest = _manifest(out)
    assert [entry["image"] for entry in manifest] == list(map(str, images))
    unprocessed = sum(entry.get("error", "").startswith("not processed") for entry in manifest)
    assert unprocessed and f"stopped with {unprocessed} of 150 images not processed" in error
    assert "run the same command with --resume to finish and write its COCO files" in error  # only what it asked for
    assert "the job was stopped (Ctrl-C or SIGTERM)" in manifest[-1]["error"]
    assert not (out / "coco.json").exists()
    subprocess.run([*command, "--resume"], check=True, capture_output=True, timeout=300)
    coco = json.loads((out / "coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [image.name for image in images]


def test_a_name_that_is_not_utf8_is_printed_escaped(onnx_server: RunningServer, small_camvid_rgb,
                                                    tmp_path: Path) -> None:
    """With a strict UTF-8 stdout (en_US.UTF-8, or PYTHONIOENCODING=utf-8) the summary of a job with
    such a name raised UnicodeEncodeError at the very end: no summary, and a traceback."""
    folder = tmp_path / "in"
    good = _write(folder / "ok.png", small_camvid_rgb)
    odd = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.png")
    Path(odd).write_bytes(b"not an image")
    run = subprocess.run(_predict_command(str(good), odd, "--out", str(tmp_path / "out"), "--server", onnx_server.address),
                         capture_output=True, text=True, errors="replace", timeout=300,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "1 image pre-annotated" in run.stdout and "FAILED" in run.stdout and "caf\\udce9.png" in run.stdout


def test_a_job_without_previews_writes_masks_and_summaries_only(onnx_client: PreLabelClient, camvid_val_images,
                                                                 tmp_path: Path) -> None:
    """For large jobs: the overlay and heat map took 400 of every 470 kB and most of the client's
    CPU. A resume that wants them sends those images again."""
    out = tmp_path / "out"
    report = predict_files(onnx_client, camvid_val_images[:2], out, previews=False, coco=True)
    assert report.written == 2
    stems = [image.stem for image in camvid_val_images[:2]]
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["coco.json", "manifest.jsonl"] + [f"{stem}{suffix}" for stem in stems for suffix in ("_mask.png", ".json")])
    assert all(set(entry) == {"image", "mask", "summary", *STAMP_KEYS} for entry in _manifest(out))
    summary = json.loads((out / f"{stems[0]}.json").read_text())
    assert summary["summary"]["mean_uncertainty"] > 0 and summary["heat_map_scale"] is None
    kept = predict_files(onnx_client, camvid_val_images[:2], out, previews=False, coco=True, resume=True)
    assert (kept.kept, kept.written) == (2, 0)
    again = predict_files(onnx_client, camvid_val_images[:2], out, coco=True, resume=True)
    assert (again.kept, again.written) == (0, 2)
    assert all(set(entry) == {"image", *FILE_KEYS, *STAMP_KEYS} for entry in _manifest(out))


def test_a_coco_job_writes_every_written_image_s_classes_as_rle(onnx_client: PreLabelClient, camvid_val_images,
                                                                 tmp_path: Path) -> None:
    """``predict --coco``: one COCO file that pycocotools loads, one annotation per class present,
    each decoding to that class's pixels in the image's palette mask; a failed image is not in it."""
    from PIL import Image
    from pycocotools.coco import COCO

    (tmp_path / "in" / "day2").mkdir(parents=True)
    (tmp_path / "in" / "a.png").symlink_to(camvid_val_images[0])
    (tmp_path / "in" / "day2" / "a.png").symlink_to(camvid_val_images[4])  # the same name in another folder
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    images = [tmp_path / "in" / "a.png", broken, tmp_path / "in" / "day2" / ".." / "day2" / "a.png"]
    out = tmp_path / "out"
    report = predict_files(onnx_client, images, out, coco=True)
    assert (report.written, report.failed) == (2, 1) and report.coco_file == out / "coco.json"
    assert "COCO file" in report.describe()
    coco = COCO(str(report.coco_file))
    names = {category["name"] for category in coco.loadCats(coco.getCatIds())}
    assert names == {name for _, name, _ in onnx_client.model().classes}
    # named relative to the images' common folder: importers refused absolute paths
    assert [image["file_name"] for image in coco.dataset["images"]] == ["a.png", "day2/a.png"]
    assert set(coco.dataset) >= {"info", "licenses"}  # datumaro's importer, which CVAT runs, needs both
    assert str(tmp_path / "in") in coco.dataset["info"]["description"]
    for entry, image in zip([e for e in _manifest(out) if "error" not in e], coco.dataset["images"]):
        mask = np.asarray(Image.open(entry["mask"]))  # the palette PNG's indices are the class ids
        assert (image["height"], image["width"]) == mask.shape
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert sorted(a["category_id"] - 1 for a in annotations) == np.unique(mask).tolist()
        for annotation in annotations:
            np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool),
                                          mask == annotation["category_id"] - 1)
            assert 0 < annotation["score"] <= 1 and annotation["area"] == coco.annToMask(annotation).sum()


def test_a_resumed_job_keeps_what_was_written_and_does_the_rest(onnx_client: PreLabelClient, camvid_val_images,
                                                               tmp_path: Path) -> None:
    """A batch job cut short had to start again from the first image."""
    from prometheus_client import REGISTRY

    def served() -> float:
        return REGISTRY.get_sample_value("prelabel_requests_total", {"model": "deeplab", "outcome": "ok"}) or 0.0

    images = camvid_val_images[10:16]
    out = tmp_path / "out"
    first = predict_files(onnx_client, images[:3], out, coco=True)  # the job that stopped after three images
    assert first.written == 3
    entries = _manifest(out)
    with (out / "manifest.jsonl").open("a") as manifest:
        manifest.write('{"image": "' + str(images[3]))  # the line a crash cut short
    Path(entries[1]["overlay"]).unlink()  # a file gone: that image is done again
    (out / "coco.json").unlink()  # killed (SIGKILL) before coco.json was written: each image's JSON holds its part
    manifest_before = (out / "manifest.jsonl").read_bytes()
    with PreLabelClient(_closed_port_address(), timeout=5, retries=0) as nobody, pytest.raises(PrelabelError):
        predict_files(nobody, images, out, coco=True, resume=True)
    assert (out / "manifest.jsonl").read_bytes() == manifest_before, "a resume that never reached the server kept it"
    out = out.rename(tmp_path / "moved")  # the folder renamed: its files are found under its new name
    kept_mask = out / Path(entries[0]["mask"]).name
    kept_time = kept_mask.stat().st_mtime_ns
    before = served()
    report = predict_files(onnx_client, images, out, coco=True, resume=True)
    assert (report.kept, report.written, report.failed) == (2, 4, 0)
    assert served() - before == 4, "only the images not kept were sent"
    assert "6 images pre-annotated (2 of them kept from the previous run)" in report.describe()
    manifest = _manifest(out)
    assert sorted(entry["image"] for entry in manifest) == sorted(map(str, images))
    assert all(Path(path).is_file() for entry in manifest for path in _listed_files(entry))
    assert kept_mask.stat().st_mtime_ns == kept_time
    coco = json.loads((out / "coco.json").read_text())
    assert sorted(image["file_name"] for image in coco["images"]) == sorted(image.name for image in images)
    assert {a["image_id"] for a in coco["annotations"]} == {image["id"] for image in coco["images"]}
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    assert all(Path(entry["mask"]).parent == out for entry in manifest)
    # another measure made other heat maps: nothing is kept
    other = predict_files(onnx_client, images[:2], out, measure="margin", resume=True)
    assert (other.kept, other.written) == (0, 2)


def test_an_image_given_twice_keeps_two_sets_of_files_when_resumed(onnx_client: PreLabelClient, camvid_val_images,
                                                                   tmp_path: Path) -> None:
    images = [camvid_val_images[20], camvid_val_images[20]]
    out = tmp_path / "out"
    predict_files(onnx_client, images, out)
    first = [entry["mask"] for entry in _manifest(out)]
    report = predict_files(onnx_client, images, out, resume=True)
    assert report.kept == 2 and [entry["mask"] for entry in _manifest(out)] == first and len(set(first)) == 2


def test_a_file_larger_than_a_message_fails_alone_unread(onnx_client: PreLabelClient, camvid_val_images,
                                                          tmp_path: Path) -> None:
    """A 2 GiB file was read whole (4 GB of client memory), then failed to serialise, and the
    stream's "Exception iterating requests!" ended the job with every image not processed."""
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sparse:  # takes no disk space: only its size matters
        sparse.truncate(2**31 + 10)
    with pytest.raises(ResourceExhausted, match=rf"huge.png is {2**31 + 10} bytes, over the limit of \d+ bytes"):
        onnx_client.predict(huge)
    report = predict_files(onnx_client, [huge, camvid_val_images[0]], tmp_path / "out")
    assert (report.written, report.failed) == (1, 1)
    assert "over the limit" in report.failures[str(huge)]


def test_the_jobs_own_files_keep_their_names_and_hold_each_file_once(onnx_client: PreLabelClient, camvid_val_images,
                                                                     tmp_path: Path) -> None:
    """An image named coco.png had its summary overwritten by the job's coco.json; an image given
    twice was in coco.json twice (CVAT would put each mask on its frame twice); and a job without
    --coco left an earlier job's coco.json beside its new manifest."""
    (tmp_path / "in").mkdir()
    coco_png = tmp_path / "in" / "coco.png"
    coco_png.symlink_to(camvid_val_images[0])
    out = tmp_path / "out"
    report = predict_files(onnx_client, [coco_png, tmp_path / "in" / ".." / "in" / "coco.png", coco_png], out,
                           coco=True)
    assert report.written == 3
    summaries = [entry["summary"] for entry in _manifest(out)]
    assert str(out / "coco.json") not in summaries and len(set(summaries)) == 3
    assert all("summary" in json.loads(Path(summary).read_text()) for summary in summaries)
    coco = json.loads((out / "coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == ["coco.png"]
    assert {annotation["image_id"] for annotation in coco["annotations"]} == {1}

    predict_files(onnx_client, camvid_val_images[:1], out)  # a new job in the same folder, without --coco
    assert not (out / "coco.json").exists()


def test_a_job_refused_for_good_does_not_suggest_resuming(onnx_client: PreLabelClient, camvid_val_images,
                                                          tmp_path: Path) -> None:
    """"run the same command with --resume to finish" was added to errors a second run meets again."""
    with pytest.raises(PrelabelError) as raised:
        predict_files(onnx_client, camvid_val_images[:1], tmp_path / "out", model="no-such-model")
    assert raised.value.code.name == "NOT_FOUND" and not getattr(raised.value, "__notes__", [])
