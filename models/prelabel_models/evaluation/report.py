"""The edges of an :class:`Evaluation`: ``metrics.json`` and the table printed on the terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prelabel_models.evaluation.evaluate import Evaluation, MeasureQuality
from prelabel_models.evaluation.metrics import PAVPU_PATCH, ReliabilityBins

METRICS_FILE = "metrics.json"


def to_json(evaluation: Evaluation) -> dict[str, Any]:
    """A JSON-ready dict; undefined values (NaN) become null, floats keep 6 decimals."""
    seg = evaluation.segmentation
    classes = [{"id": i, "name": name, "iou": _num(iou), "accuracy": _num(acc)}
               for i, (name, iou, acc) in enumerate(zip(evaluation.class_names, seg.iou, seg.class_accuracy))]
    return {
        "model": evaluation.model, "version": evaluation.version, "backend": evaluation.backend,
        "data": evaluation.data, "split": evaluation.split, "images": evaluation.images,
        "pixels": evaluation.pixels, "temperature": evaluation.temperature,
        "segmentation": {"mean_iou": _num(seg.mean_iou), "pixel_accuracy": _num(seg.pixel_accuracy),
                         "mean_class_accuracy": _num(seg.mean_class_accuracy), "classes": classes},
        "calibration": {"ece_before": _num(evaluation.calibration_before.ece),
                        "ece_after": _num(evaluation.calibration_after.ece),
                        "reliability_before": _bins(evaluation.calibration_before),
                        "reliability_after": _bins(evaluation.calibration_after)},
        "uncertainty": {"default_measure": evaluation.default_measure,
                        "measures": {q.measure: _measure(q) for q in evaluation.uncertainty}},
        "seconds": round(evaluation.seconds, 1),
    }


def write_json(evaluation: Evaluation, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    path.write_text(json.dumps(to_json(evaluation), indent=2, allow_nan=False) + "\n")
    return path


def print_report(evaluation: Evaluation, console: Console | None = None) -> None:
    """Per-class IoU, then one row per uncertainty measure, then calibration."""
    console = console or Console()
    seg = evaluation.segmentation
    classes = Table(title=f"{evaluation.model} on {evaluation.split} ({evaluation.images} images, "
                          f"{evaluation.backend})")
    classes.add_column("class")
    classes.add_column("IoU %", justify="right")
    classes.add_column("accuracy %", justify="right")
    for name, iou, accuracy in zip(evaluation.class_names, seg.iou, seg.class_accuracy):
        classes.add_row(name, _pct(iou), _pct(accuracy))
    classes.add_section()
    classes.add_row("mean", _pct(seg.mean_iou), _pct(seg.mean_class_accuracy), style="bold")
    classes.add_row("pixel accuracy", "", _pct(seg.pixel_accuracy))
    console.print(classes)
    console.print(_uncertainty_table(evaluation))
    console.print(f"ECE ({len(evaluation.calibration_before.counts)} bins): "
                  f"{_pct(evaluation.calibration_before.ece)} % at T=1, "
                  f"{_pct(evaluation.calibration_after.ece)} % at the card's T={evaluation.temperature:g}")


def _uncertainty_table(evaluation: Evaluation) -> Table:
    first = evaluation.uncertainty[0]  # evaluate() always scores at least one measure
    table = Table(title=f"uncertainty vs wrong pixels (error rate {_pct(first.detection.error_rate)} %)",
                  caption="top k %: share of all wrong pixels among the k % most uncertain pixels")
    table.add_column("measure", no_wrap=True)
    for column in ("AUROC", "AUPR", f"PAvPU@{first.pavpu_threshold:g}"):
        table.add_column(column, justify="right")
    for fraction in first.detection.review_fractions:
        table.add_column(f"top {fraction:.0%}", justify="right", no_wrap=True)
    for quality in evaluation.uncertainty:
        name = quality.measure + (" (default)" if quality.measure == evaluation.default_measure else "")
        detection = quality.detection
        table.add_row(name, _fixed(detection.auroc), _fixed(detection.aupr), _fixed(quality.pavpu),
                      *(f"{_pct(v)} %" for v in detection.review))
    return table


def _measure(quality: MeasureQuality) -> dict[str, Any]:
    detection = quality.detection
    return {
        "auroc": _num(detection.auroc), "aupr": _num(detection.aupr), "error_rate": _num(detection.error_rate),
        "review": {f"{f:g}": _num(v) for f, v in zip(detection.review_fractions, detection.review)},
        "pavpu": {"value": _num(quality.pavpu), "threshold": quality.pavpu_threshold, "patch": PAVPU_PATCH,
                  "sweep": [{"threshold": t, "value": _num(v)} for t, v in quality.pavpu_sweep]},
        "review_curve": {"reviewed": [_num(v) for v in detection.curve.reviewed],
                         "errors_found": [_num(v) for v in detection.curve.errors_found]},
    }


def _bins(bins: ReliabilityBins) -> dict[str, Any]:
    return {"edges": [_num(v) for v in bins.edges], "counts": bins.counts.tolist(),
            "mean_confidence": [_num(v) for v in bins.mean_confidence],
            "accuracy": [_num(v) for v in bins.accuracy]}


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _fixed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"
