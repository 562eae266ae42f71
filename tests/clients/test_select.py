"""`prelabel select` ranks a folder of real CamVid images through the real server and writes the
ranked list and the HTML report; a file that cannot be scored is listed, never skipped."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from prelabel_client import PreLabelClient
from prelabel_client.cli import main
from prelabel_client.selection import rank_pool, write_report
from prelabel_server.grpc_api.server import RunningServer


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, camvid_val_images: list[Path]) -> Path:
    folder = tmp_path_factory.mktemp("pool")
    for image in camvid_val_images[::8][:12]:
        (folder / image.name).symlink_to(image)
    (folder / "truncated.png").write_bytes(camvid_val_images[0].read_bytes()[:500])
    return folder


@pytest.mark.parametrize("strategy", ["uncertainty", "diverse", "random"])
def test_select_ranks_the_pool_and_writes_list_and_report(onnx_server: RunningServer, pool: Path, tmp_path: Path,
                                                          strategy: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "selection.json"
    code = main(["select", str(pool), "--budget", "4", "--strategy", strategy, "--out", str(out),
                 "--server", onnx_server.address, "--model", "deeplab"])
    assert code == 1  # one file could not be scored: reported, and the exit code says so
    selection = json.loads(out.read_text())
    assert set(selection["failed"]) == {str(pool / "truncated.png")}
    assert "INVALID_ARGUMENT" in selection["failed"][str(pool / "truncated.png")]
    ranked = selection["ranked"]
    assert len(ranked) == 12 and [r["rank"] for r in ranked] == list(range(1, 13))
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    chosen = selection["selected"]
    assert len(chosen) == 4 and len({c["image"] for c in chosen}) == 4 and all(c["reason"] for c in chosen)
    if strategy == "uncertainty":
        assert [c["image"] for c in chosen] == [r["image"] for r in ranked[:4]]
    if strategy == "diverse":  # the first pick has no images chosen before it to be far from
        assert "the first pick" in chosen[0]["reason"] and "chosen before it" not in chosen[0]["reason"]
        assert all("from the images chosen before it" in c["reason"] for c in chosen[1:])
    report = out.with_suffix(".html").read_text()
    assert report.count('alt="image" src="data:image/png;base64,') == 4
    assert report.count('alt="uncertainty" src="data:image/png;base64,') == 4
    assert "truncated.png" in report
    assert "chose 4 of 12 images" in capsys.readouterr().out


def test_a_budget_of_zero_chooses_nothing_and_ranks_the_pool(onnx_server: RunningServer, pool: Path,
                                                             tmp_path: Path) -> None:
    """``diverse`` with budget 0 stacked an empty shortlist: a traceback after the whole pool was scored."""
    out = tmp_path / "selection.json"
    code = main(["select", str(pool), "--budget", "0", "--out", str(out), "--server", onnx_server.address,
                 "--model", "deeplab"])
    selection = json.loads(out.read_text())
    assert code == 1 and selection["selected"] == [] and len(selection["ranked"]) == 12  # 1: truncated.png failed


@pytest.mark.parametrize("case", ["empty-pool", "out-is-html", "report-is-out", "out-is-a-folder", "out-under-a-file",
                                  "out-is-a-pool-image", "out-where-no-file-can-be-made"])
def test_unusable_inputs_are_refused_before_any_image_is_scored(tmp_path: Path, camvid_val_images: list[Path],
                                                                case: str, capsys: pytest.CaptureFixture) -> None:
    """Each was found only after the whole pool had been scored (or not at all: an empty pool wrote
    an empty selection, and --out x.html had the report overwrite the list). No server is running
    here: the command must stop before it would need one."""
    pool = tmp_path / "pool"
    pool.mkdir()
    if case != "empty-pool":
        (pool / "a.png").symlink_to(camvid_val_images[0])
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()
    out, extra = {"empty-pool": ("sel.json", []), "out-is-html": ("sel.html", []),
                  "report-is-out": ("sel.json", ["--report", str(tmp_path / "sel.json")]),
                  "out-is-a-folder": ("folder", []), "out-under-a-file": ("afile/sel.json", []),
                  "out-is-a-pool-image": ("pool/a.png", ["--report", str(tmp_path / "r.html")]),
                  # /proc passes os.access(W_OK) for root, yet takes no new files
                  "out-where-no-file-can-be-made": ("/proc/sel.json", ["--report", str(tmp_path / "r.html")])}[case]
    code = main(["select", str(pool), "--budget", "1", "--out", str(tmp_path / out), *extra,
                 "--server", "127.0.0.1:1", "--timeout", "2"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("prelabel select: ") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "sel.json").exists() and not (tmp_path / "sel.html").exists()
    assert (pool / "a.png").is_symlink() or case == "empty-pool"


def test_a_server_gone_mid_run_keeps_what_was_scored_and_lists_the_rest(start_extra_server,
                                                                        camvid_val_images: list[Path],
                                                                        tmp_path: Path) -> None:
    """The scores already received were thrown away and nothing was written; now every image is
    either ranked or listed as not scored, and the report says why each heat map is missing."""
    server = start_extra_server()
    images = camvid_val_images[:48]
    served = {"model": "deeplab", "outcome": "ok"}
    before = REGISTRY.get_sample_value("prelabel_requests_total", served) or 0.0

    def stop_after_three_images() -> None:
        while (REGISTRY.get_sample_value("prelabel_requests_total", served) or 0.0) < before + 3:
            time.sleep(0.05)
        server.stop(grace=1.0)  # a second for the answers already counted to reach the client

    stopper = threading.Thread(target=stop_after_three_images, daemon=True)
    stopper.start()
    with PreLabelClient(server.address, timeout=30) as client:
        selection = rank_pool(client, images, 2, "uncertainty", model="deeplab")
        stopper.join(timeout=60)
        assert 1 <= len(selection.ranked) < len(images)
        assert {r.image for r in selection.ranked} | set(selection.failed) == {str(p) for p in images}
        assert all(error.startswith("not scored: ") for error in selection.failed.values())
        report = tmp_path / "report.html"
        write_report(client, selection, report)
    page = report.read_text()
    assert page.count('alt="image"') == len(selection.selected) >= 1
    assert "UNAVAILABLE" in page and page.count("<li>") == len(selection.failed)


def test_only_image_files_are_pool_images(tmp_path: Path, camvid_val_images: list[Path]) -> None:
    """A pipe named like an image was taken for one, and reading it blocked `select` for ever."""
    from prelabel_models.image_files import list_images

    (tmp_path / "a.png").symlink_to(camvid_val_images[0])
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "._a.png").write_bytes(b"macOS resource fork")  # made `select` exit 1 as an unreadable image
    assert list_images(tmp_path) == [tmp_path / "a.png"]
