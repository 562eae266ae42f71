"""`prelabel select` ranks a folder of real CamVid images through the real server and writes the
ranked list and the HTML report; a file that cannot be scored is listed, never skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prelabel_client.cli import main
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
    report = out.with_suffix(".html").read_text()
    assert report.count('alt="image" src="data:image/png;base64,') == 4
    assert report.count('alt="uncertainty" src="data:image/png;base64,') == 4
    assert "truncated.png" in report
    assert "chose 4 of 12 images" in capsys.readouterr().out
