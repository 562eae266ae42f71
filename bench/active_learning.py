"""Active-learning simulation on CamVid: how many labels does each acquisition strategy save?

    .venv/bin/python bench/active_learning.py [--seeds 0 1] [--quick]

CamVid train (367 images) is the unlabelled pool, val (101) the test. Every strategy starts from
the same seeded 20 labelled images and, in rounds, acquires 20 more — random, entropy (mean of the
5 % most uncertain pixels), BALD (mean MC-dropout mutual information, 8 samples) and entropy plus
diversity (k-center over encoder embeddings) — fine-tuning the previous round's model each time
with `prelabel train --init`'s code, up to 100 labels; one run on all 367 gives the ceiling.
To fit 2 CPU cores everything runs at half resolution (240x180) with short schedules: compare the
strategies with each other, not with full-resolution numbers. Writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from prelabel_models import ModelPackage
from prelabel_models.acquisition import PoolItem, select, top_fraction_score
from prelabel_models.backends import create_backend
from prelabel_models.evaluation.metrics import confusion_matrix, segmentation_scores
from prelabel_models.image_files import paired_files, read_label, read_rgb, split_folders
from prelabel_models.postprocessing import segment_maps
from prelabel_models.predictor import Predictor
from prelabel_models.training.config import TrainConfig
from prelabel_models.training.trainer import TrainingRun, train

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "entropy", "bald", "diverse")


@dataclass
class Point:
    strategy: str
    seed: int
    labels: int
    miou: float
    seconds: float


def downscale_dataset(source: Path, target: Path, scale: float) -> Path:
    """CamVid's layout at ``scale``: images by area averaging, labels by nearest neighbour."""
    for split in ("train", "val"):
        for image, label in paired_files(split_folders(source, split)):
            for path, folder, interpolation in ((image, split, cv2.INTER_AREA), (label, f"{split}annot", cv2.INTER_NEAREST)):
                out = target / folder / path.name
                if not out.exists():
                    out.parent.mkdir(parents=True, exist_ok=True)
                    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
                    cv2.imwrite(str(out), cv2.resize(pixels, size, interpolation=interpolation))
    return target


def subset(data: Path, names: list[str], target: Path) -> Path:
    """A dataset folder whose train split is ``names`` (symlinks) and whose val split is all of val."""
    for split, chosen in (("train", names), ("val", sorted(p.name for p in (data / "val").iterdir()))):
        for folder in (split, f"{split}annot"):
            (target / folder).mkdir(parents=True, exist_ok=True)
            for name in chosen:
                (target / folder / name).symlink_to(data / folder / name)
    return target


def fine_tune(config: TrainConfig, data: Path, work: Path, init: Path | None, epochs: int) -> Path:
    recipe = config.recipe.model_copy(update={"epochs": epochs, "lr": config.recipe.lr if init is None else config.recipe.lr / 2})
    run = TrainingRun(config=config.model_copy(update={"recipe": recipe}), data_root=data, out=work / "package",
                      run_dir=work / "run", init=init)
    train(run)
    return run.out


def val_miou(predictor: Predictor, data: Path) -> float:
    num_classes = predictor.card.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for image, label in paired_files(split_folders(data, "val")):
        mask = predictor.logits(read_rgb(image)).argmax(0)
        confusion += confusion_matrix(read_label(label), mask, num_classes, predictor.card.ignore_index)
    return float(segmentation_scores(confusion).mean_iou)


def pool_items(predictor: Predictor, data: Path, names: list[str], strategy: str) -> list[PoolItem]:
    """What each strategy scores the unlabelled images by."""
    items = []
    for name in names:
        image = read_rgb(data / "train" / name)
        if strategy == "bald":
            stats = predictor.mc_dropout_statistics(image, 8, seed=len(items))
            items.append(PoolItem(name, float(stats.mutual_information.mean())))
            continue
        logits, embedding = predictor.logits_and_embedding(image)
        uncertainty = segment_maps(logits, predictor.card.temperature).uncertainty
        items.append(PoolItem(name, top_fraction_score(uncertainty), embedding if strategy == "diverse" else None))
    return items


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def initial_model(config: TrainConfig, data: Path, work: Path, labelled: list[str], seed: int, args: argparse.Namespace) -> Path:
    """Round 0 is the same for every strategy of a seed (same images, same training seed): train it once."""
    round_dir = work / f"seed{seed}-initial-{len(labelled)}"
    if (round_dir / "package" / "card.json").exists():
        return round_dir / "package"
    return fine_tune(config, subset(data, labelled, fresh(round_dir) / "data"), round_dir, None, args.epochs)


def run_strategy(strategy: str, seed: int, config: TrainConfig, data: Path, work: Path, args: argparse.Namespace) -> list[Point]:
    pool = sorted(p.name for p in (data / "train").iterdir())
    labelled = list(np.random.default_rng(seed).choice(pool, args.initial, replace=False))
    points, package, started = [], None, time.perf_counter()
    for round_index in range(args.rounds):
        if package is None:
            package = initial_model(config, data, work, labelled, seed, args)
        else:
            round_dir = fresh(work / f"{strategy}-seed{seed}-round{round_index}")
            package = fine_tune(config, subset(data, labelled, round_dir / "data"), round_dir, package, args.round_epochs)
        loaded = ModelPackage.open(package)
        predictor = Predictor(loaded.card, create_backend("torch", loaded))
        points.append(Point(strategy, seed, len(labelled), val_miou(predictor, data), time.perf_counter() - started))
        print(f"{strategy:>8} seed {seed}: {len(labelled):3d} labels -> val mIoU {points[-1].miou:.4f}", flush=True)
        if round_index == args.rounds - 1:
            break
        unlabelled = [name for name in pool if name not in set(labelled)]
        name_strategy = {"random": "random", "entropy": "uncertainty", "bald": "uncertainty", "diverse": "diverse"}[strategy]
        items = pool_items(predictor, data, unlabelled, strategy) if strategy != "random" else [PoolItem(n, 0.0) for n in unlabelled]
        labelled += [unlabelled[i] for i in select(items, args.step, name_strategy, seed=seed * 1000 + round_index)]
    return points


def plot(points: list[Point], ceiling: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for strategy in STRATEGIES:
        mine = [p for p in points if p.strategy == strategy]
        if not mine:
            continue
        labels = sorted({p.labels for p in mine})
        means = [np.mean([p.miou for p in mine if p.labels == n]) for n in labels]
        axis.plot(labels, means, marker="o", label=strategy)
    if ceiling is not None:
        axis.axhline(ceiling, color="grey", linestyle="--", label="all 367 (ceiling)")
    axis.set_xlabel("labelled images")
    axis.set_ylabel("val mIoU (half resolution)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--config", type=Path, default=ROOT / "models" / "configs" / "camvid.toml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/prelabel-active-learning"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--step", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="rounds including the initial one (5: 20..100 labels)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the first round (from scratch)")
    parser.add_argument("--round-epochs", type=int, default=8, help="epochs of each later (fine-tuning) round")
    parser.add_argument("--ceiling-epochs", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--resume", action="store_true", help="keep the strategies already complete in --out")
    parser.add_argument("--report-only", action="store_true", help="plot and tabulate --out again, training nothing")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 4+4 images, 1 epoch each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "active_learning.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "active-learning.png")
    args = parser.parse_args()
    if args.report_only:
        results = Results.load(args.out)
        if not results.points:  # an empty plot would replace the committed one
            parser.error(f"--report-only needs the results of a run: {args.out} is missing or holds none")
        report(results, args.plot)
        return
    if args.quick:
        args.initial, args.step, args.rounds, args.epochs, args.round_epochs, args.ceiling_epochs = 4, 4, 2, 1, 1, 1

    data = downscale_dataset(args.data, args.work / "data", args.scale)
    config = TrainConfig.load(args.config)
    height, width = (round(360 * args.scale) // 16) * 16, (round(480 * args.scale) // 16) * 16
    # select_on_val off: val is this simulation's test set, so it must not pick the epoch either.
    config.recipe = config.recipe.model_copy(update={"crop": (height, width), "scale_range": (0.75, 1.25), "select_on_val": False})
    results = Results.load(args.out) if args.resume else Results()
    for index, seed in enumerate(args.seeds):
        for strategy in args.strategies:
            if results.complete(strategy, seed, args.rounds):
                print(f"{strategy:>8} seed {seed}: already in {args.out}, skipped", flush=True)
                continue
            results.points = [p for p in results.points if (p.strategy, p.seed) != (strategy, seed)]
            results.points += run_strategy(strategy, seed, config, data, args.work, args)
            results.save(args, args.out)
        if index == 0 and results.ceiling_miou is None:
            results.ceiling_miou = ceiling_miou(config, data, args)
            results.save(args, args.out)
    report(results, args.plot)
    print(f"wrote {args.out} and {args.plot}")


def report(results: "Results", plot_path: Path) -> None:
    plot(results.points, results.ceiling_miou, plot_path)
    print(markdown_table(results))


def mean_curves(points: list[Point]) -> dict[str, list[tuple[int, float, list[float]]]]:
    """Per strategy: (labels, mean mIoU over seeds, each seed's mIoU), by label count."""
    curves = {}
    for strategy in STRATEGIES:
        mine = [p for p in points if p.strategy == strategy]
        labels = sorted({p.labels for p in mine})
        values = [[p.miou for p in mine if p.labels == n] for n in labels]
        if labels:
            curves[strategy] = [(n, float(np.mean(v)), v) for n, v in zip(labels, values)]
    return curves


def labels_to_reach(curve: list[tuple[int, float, list[float]]], target: float) -> float | None:
    """Labels at which the mean curve first reaches ``target`` (linear between measured points)."""
    for (n0, m0, _), (n1, m1, _) in zip(curve, curve[1:]):
        if m0 >= target:
            return float(n0)
        if m1 >= target:
            return n0 + (target - m0) / (m1 - m0) * (n1 - n0)
    return float(curve[0][0]) if curve and curve[0][1] >= target else None


def markdown_table(results: "Results", pool: int = 367) -> str:
    """The table docs/active-learning.md shows, with issue #5's two targets worked out."""
    curves = mean_curves(results.points)
    labels = sorted({n for curve in curves.values() for n, _, _ in curve})
    seeds = sorted({p.seed for p in results.points})
    lines = [f"| strategy (seeds) | {' | '.join(f'{n} labels' for n in labels)} | labels to reach random's final mIoU | "
             f"best mIoU with ≤ 25 % of the pool / ceiling |",
             "|---|" + "---:|" * (len(labels) + 2)]
    random_final = curves["random"][-1][1] if "random" in curves else None
    for strategy, curve in curves.items():
        cells = {n: f"{m:.3f}" + (f" ({', '.join(f'{v:.3f}' for v in per_seed)})" if len(per_seed) > 1 else "")
                 for n, m, per_seed in curve}
        needed = labels_to_reach(curve, random_final) if random_final is not None else None
        saving = f"{needed:.0f} ({1 - needed / curve[-1][0]:.0%} fewer)" if needed is not None else "not reached"
        within_quarter = [m for n, m, _ in curve if n <= 0.25 * pool]
        ceiling = (f"{max(within_quarter) / results.ceiling_miou:.0%}" if within_quarter and results.ceiling_miou
                   else "—")
        strategy_seeds = sorted({p.seed for p in results.points if p.strategy == strategy})
        lines.append(f"| {strategy} ({', '.join(map(str, strategy_seeds))}) | {' | '.join(cells.get(n, '—') for n in labels)} "
                     f"| {saving} | {ceiling} |")
    if results.ceiling_miou is not None:
        lines.append(f"\nCeiling (all {pool} images): val mIoU {results.ceiling_miou:.3f}. Seeds: {seeds}.")
    return "\n".join(lines)


@dataclass
class Results:
    """Everything measured so far, saved after each strategy so that a stopped run can ``--resume``."""

    points: list[Point] = field(default_factory=list)
    ceiling_miou: float | None = None

    @classmethod
    def load(cls, path: Path) -> "Results":
        if not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        return cls([Point(**p) for p in saved["points"]], saved["ceiling_miou"])

    def complete(self, strategy: str, seed: int, rounds: int) -> bool:
        return sum(1 for p in self.points if (p.strategy, p.seed) == (strategy, seed)) >= rounds

    def save(self, args: argparse.Namespace, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                    "ceiling_miou": self.ceiling_miou, "points": [asdict(p) for p in self.points]}, indent=2))


def ceiling_miou(config: TrainConfig, data: Path, args: argparse.Namespace) -> float:
    """Val mIoU of one model trained on the whole pool: the yardstick for "fraction of full-data mIoU"."""
    everything = sorted(p.name for p in (data / "train").iterdir())
    ceiling_dir = args.work / "ceiling"
    shutil.rmtree(ceiling_dir, ignore_errors=True)
    package = fine_tune(config, subset(data, everything, ceiling_dir / "data"), ceiling_dir, None, args.ceiling_epochs)
    loaded = ModelPackage.open(package)
    ceiling = val_miou(Predictor(loaded.card, create_backend("torch", loaded)), data)
    print(f"ceiling: all {len(everything)} labels -> val mIoU {ceiling:.4f}", flush=True)
    return ceiling


if __name__ == "__main__":
    main()
