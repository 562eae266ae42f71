"""PNG plots of an :class:`Evaluation`: reliability diagram, review curves, per-class IoU.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never pyplot, so
plotting needs no display, touches no global backend state and is safe inside a server process.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prelabel_models.evaluation.evaluate import Evaluation
from prelabel_models.evaluation.metrics import ReliabilityBins

RELIABILITY_PNG = "reliability.png"
REVIEW_PNG = "review_curve.png"
CLASS_IOU_PNG = "class_iou.png"
_DPI = 120


def write_plots(evaluation: Evaluation, out: Path) -> list[Path]:
    """Writes the three PNGs into ``out`` and returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    plots = [(RELIABILITY_PNG, reliability_figure), (REVIEW_PNG, review_figure), (CLASS_IOU_PNG, class_iou_figure)]
    paths = []
    for name, build in plots:
        figure = build(evaluation)
        FigureCanvasAgg(figure)
        figure.savefig(out / name, dpi=_DPI)
        paths.append(out / name)
    return paths


def reliability_figure(evaluation: Evaluation) -> Figure:
    """Accuracy against confidence per bin, before (T=1) and after the card's temperature."""
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    panels = [(evaluation.calibration_before, "T = 1"), (evaluation.calibration_after, f"T = {evaluation.temperature:g}")]
    for ax, (bins, title) in zip(axes, panels):
        _reliability_panel(ax, bins, title)
    axes[0].set_ylabel("accuracy")
    figure.suptitle(f"{evaluation.model}: reliability of top-class confidence ({evaluation.split})")
    return figure


def _reliability_panel(ax: Axes, bins: ReliabilityBins, title: str) -> None:
    edges = bins.edges
    width = edges[1] - edges[0]
    filled = bins.counts > 0  # an empty bin gets no bar, not a misleading full-height gap
    accuracy = np.where(filled, bins.accuracy, 0.0)
    confidence = np.where(filled, bins.mean_confidence, 0.0)
    ax.bar(edges[:-1], accuracy, width=width, align="edge", color="#4c72b0", edgecolor="white", label="accuracy")
    ax.bar(edges[:-1], confidence - accuracy, bottom=accuracy, width=width, align="edge",
           color="#dd8452", alpha=0.45, edgecolor="white", label="gap to confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{title}: ECE {_pct(bins.ece)} %")
    ax.legend(loc="upper left", fontsize="small")


def review_figure(evaluation: Evaluation) -> Figure:
    """Share of wrong pixels found against share of pixels reviewed, most uncertain first."""
    figure = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for quality in evaluation.uncertainty:
        curve = quality.detection.curve
        ax.plot(curve.reviewed, curve.errors_found,
                label=f"{quality.measure} (AUROC {quality.detection.auroc:.3f})")
    error_rate = evaluation.uncertainty[0].detection.error_rate
    reviewed = np.linspace(0, 1, 201)
    if error_rate > 0:
        ax.plot(reviewed, np.minimum(1.0, reviewed / error_rate), color="black", linestyle=":", label="oracle")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    for fraction in evaluation.uncertainty[0].detection.review_fractions:
        ax.axvline(fraction, color="lightgrey", linewidth=0.8, zorder=0)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="share of pixels reviewed (most uncertain first)",
           ylabel="share of wrong pixels found", title=f"{evaluation.model}: review curve ({evaluation.split})")
    ax.legend(loc="lower right", fontsize="small")
    return figure


def class_iou_figure(evaluation: Evaluation) -> Figure:
    """IoU per class in the classes' own colours, with the mean as a line."""
    figure = Figure(figsize=(8, 4.2), layout="constrained")
    ax = figure.subplots()
    seg = evaluation.segmentation
    iou = [0.0 if math.isnan(v) else 100 * v for v in seg.iou]
    colors = [tuple(c / 255 for c in color) for color in evaluation.class_colors]
    bars = ax.bar(evaluation.class_names, iou, color=colors, edgecolor="black", linewidth=0.5)
    ax.bar_label(bars, labels=[_pct(v) for v in seg.iou], fontsize="small", padding=2)
    ax.axhline(100 * np.nan_to_num(seg.mean_iou), color="black", linestyle="--", linewidth=1,
               label=f"mean IoU {_pct(seg.mean_iou)}")
    ax.set(ylim=(0, 105), ylabel="IoU %", title=f"{evaluation.model}: per-class IoU ({evaluation.split})")
    ax.tick_params(axis="x", labelrotation=35)
    ax.legend(loc="upper right", fontsize="small")
    return figure


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"
