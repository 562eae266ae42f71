"""`prelabel evaluate` and `prelabel calibrate` end to end on a small random package and 2 CamVid images."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from prelabel_client.cli import main
from prelabel_models.card import ModelCard
from prelabel_models.evaluation.evaluate import Evaluation, evaluate
from prelabel_models.evaluation.plots import CLASS_IOU_PNG, RELIABILITY_PNG, REVIEW_PNG
from prelabel_models.evaluation.report import METRICS_FILE, to_json
from prelabel_models.image_files import read_label

pytestmark = pytest.mark.slow
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def random_package(camvid_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepLabV3+/ResNet-18 CamVid package with random weights whose logits are spread (see
    tests/service_packages.py), exported to ONNX: fast to make, right and wrong in varied ways."""
    from service_packages import build_package, camvid_card

    folder = tmp_path_factory.mktemp("random_package") / "camvid"
    calibration = sorted((camvid_root / "train").glob("*.png"))[::90][:4]
    build_package(folder, camvid_card("camvid", "DeepLabV3Plus", "resnet18", output_stride=16), calibration)
    return folder


@pytest.fixture(scope="module")
def torch_evaluation(random_package: Path, tiny_camvid: Path) -> Evaluation:
    return evaluate(random_package, tiny_camvid, "val", "torch")


def _comparable(evaluation: Evaluation) -> dict:
    document = to_json(evaluation)
    for volatile in ("seconds", "backend"):
        document.pop(volatile)
    return document


def test_cli_writes_metrics_json_and_plots(random_package: Path, tiny_camvid: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture, torch_evaluation: Evaluation) -> None:
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(random_package), "--data", str(tiny_camvid), "--backend", "torch", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pixel accuracy" in printed and "entropy (default)" in printed and "top 10%" in printed
    document = json.loads((out / METRICS_FILE).read_text())
    assert document["images"] == 2 and document["backend"] == "torch"
    assert set(document["uncertainty"]["measures"]) == {"entropy", "margin", "least_confidence"}
    entropy = document["uncertainty"]["measures"]["entropy"]
    assert set(entropy["review"]) == {"0.05", "0.1", "0.2"} and 0 <= entropy["auroc"] <= 1
    assert len(document["calibration"]["reliability_before"]["counts"]) == 15
    for name in (RELIABILITY_PNG, REVIEW_PNG, CLASS_IOU_PNG):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    # The CLI and the API give the same numbers: nothing depends on run order or timing.
    document.pop("seconds"), document.pop("backend")
    assert document == json.loads(json.dumps(_comparable(torch_evaluation)))


def test_scores_agree_with_torchmetrics_and_skip_ignored_pixels(torch_evaluation: Evaluation, random_package: Path,
                                                                tiny_camvid: Path) -> None:
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_jaccard_index

    from prelabel_models.evaluation.runner import labelled_logits, open_predictor, split_pairs

    pairs = split_pairs(tiny_camvid, "val")
    labels = np.stack([read_label(label) for _, label in pairs])
    assert torch_evaluation.pixels == np.count_nonzero(labels != 11)
    predictions = np.stack([logits.argmax(0) for logits, _ in labelled_logits(open_predictor(random_package), pairs, "test")])
    assert len(np.unique(predictions)) >= 3  # several classes, so the per-class check means something
    target, preds = torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(predictions)
    accuracy = multiclass_accuracy(preds, target, 11, average="micro", ignore_index=11)
    assert torch_evaluation.segmentation.pixel_accuracy == pytest.approx(float(accuracy), abs=1e-6)
    iou = multiclass_jaccard_index(preds, target, 11, average="none", ignore_index=11).numpy()
    present = ~np.isnan(np.array(torch_evaluation.segmentation.iou))
    np.testing.assert_allclose(np.array(torch_evaluation.segmentation.iou)[present], iou[present], atol=1e-6)


def test_onnx_backend_gives_the_same_numbers(random_package: Path, tiny_camvid: Path,
                                             torch_evaluation: Evaluation) -> None:
    onnx_evaluation = evaluate(random_package, tiny_camvid, "val", "onnx")
    assert onnx_evaluation.backend == "onnx"
    _assert_close(_comparable(onnx_evaluation), _comparable(torch_evaluation), path="metrics")


def test_calibrate_writes_a_temperature_that_lowers_nll(random_package: Path, tiny_camvid: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    package = tmp_path / "package"
    shutil.copytree(random_package, package)
    assert main(["calibrate", str(package), "--data", str(tiny_camvid), "--max-pixels", "50000"]) == 0
    printed = capsys.readouterr().out
    before, after = (float(v) for v in re.search(r"NLL ([\d.]+) -> ([\d.]+)", printed).groups())
    assert after < before
    card = ModelCard.load(package)
    assert card.temperature != 1.0 and card.provenance["calibration"]["pixels"] == 50000
    assert card.model_copy(update={"temperature": 1.0, "provenance": {}}) == ModelCard.load(random_package)


@pytest.mark.parametrize(("extra", "message"), [
    (["--backend", "tensorrt"], "unknown backend 'tensorrt'; choose one of"),
    (["--measures", "bald"], "unknown uncertainty measures ['bald']"),
    (["--split", "test"], "no 'test' split"),
])
def test_bad_arguments_are_one_line_errors(random_package: Path, tiny_camvid: Path, capsys: pytest.CaptureFixture,
                                           extra: list[str], message: str) -> None:
    assert main(["evaluate", str(random_package), "--data", str(tiny_camvid), *extra]) == 2
    assert message in capsys.readouterr().err


def _broken_copy(tiny_camvid: Path, root: Path, label_of) -> Path:
    """tiny_camvid's val split with every label replaced by ``label_of(label)``."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for path in sorted((tiny_camvid / "val").iterdir()):
        (root / "val" / path.name).symlink_to(path.resolve())
    for path in sorted((tiny_camvid / "valannot").iterdir()):
        cv2.imwrite(str(root / "valannot" / path.name), label_of(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)))
    return root


@pytest.mark.parametrize(("command", "label_of", "message"), [
    ("evaluate", lambda label: label[:-10], "but its label"),
    ("calibrate", lambda label: label[:-10], "but its label"),
    ("calibrate", lambda label: np.full_like(label, 50), "labels [50] are not classes 0..10"),
    ("calibrate", lambda label: np.full_like(label, 11), "every label pixel is the ignore index"),
])
def test_an_unusable_dataset_is_a_one_line_error(random_package: Path, tiny_camvid: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture, command: str, label_of,
                                                 message: str) -> None:
    """Labels of another size, with values that are not classes, or all ignored: once tracebacks
    (calibrate's stray label an IndexError), now one line and status 2, the card untouched."""
    data = _broken_copy(tiny_camvid, tmp_path / "data", label_of)
    card = (random_package / "card.json").read_text()
    assert main([command, str(random_package), "--data", str(data), "--backend", "onnx",
                 *(["--out", str(tmp_path / "out")] if command == "evaluate" else [])]) == 2
    assert message in capsys.readouterr().err
    assert (random_package / "card.json").read_text() == card


def test_calibrate_refuses_a_sample_of_no_pixels(random_package: Path, tiny_camvid: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["calibrate", str(random_package), "--data", str(tiny_camvid), "--max-pixels", "0"])
    assert stopped.value.code == 2 and "--max-pixels: must be 1 or more" in capsys.readouterr().err


def test_a_folder_without_card_is_not_a_package(tiny_camvid: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["calibrate", str(tiny_camvid), "--data", str(tiny_camvid)]) == 2
    assert "not a model package" in capsys.readouterr().err


def _assert_close(actual: object, expected: object, path: str) -> None:
    """Equal structure; numbers within what the README's one decimal (of a percentage) can tell apart."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=2e-4), path
    elif isinstance(expected, int) and not isinstance(expected, bool):
        assert abs(actual - expected) <= max(2, 1e-3 * abs(expected)), path  # a pixel may change bin
    else:
        assert actual == expected, path
