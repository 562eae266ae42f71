"""The training loop: class-weighted cross-entropy plus Dice, AdamW with warm-up and cosine decay,
per-epoch validation, a checkpoint every epoch, and the best epoch written as a model package."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from prelabel_models.card import CARD_FILE, ModelCard
from prelabel_models.evaluation.metrics import confusion_matrix, segmentation_scores
from prelabel_models.network import SegmentationNetwork, build_network, load_network, save_weights
from prelabel_models.image_files import DatasetError
from prelabel_models.package import ModelPackage, ModelPackageError
from prelabel_models.runtime import keep_freed_memory
from prelabel_models.tiling import pad_to_multiple
from prelabel_models.training.config import Recipe, TrainConfig
from prelabel_models.image_files import paired_files, split_folders
from prelabel_models.training.data import SegmentationFolder, class_frequencies, training_augmentation

CHECKPOINT = "checkpoint.pt"
METRICS_LOG = "metrics.jsonl"


@dataclass
class TrainingRun:
    """Where a run keeps its state: the checkpoint and metrics log live in ``run_dir``, the best
    model package in ``out``."""

    config: TrainConfig
    data_root: Path
    out: Path
    run_dir: Path
    init: Path | None = None
    resume: bool = False


def class_weights(frequencies: np.ndarray, mode: str) -> torch.Tensor:
    if mode == "none":
        return torch.ones(len(frequencies))
    present = frequencies > 0
    weights = np.ones_like(frequencies)
    weights[present] = np.median(frequencies[present]) / frequencies[present]
    if mode == "sqrt_median_frequency":
        weights = np.sqrt(weights)
    return torch.tensor(weights, dtype=torch.float32)


def lr_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = recipe.epochs * steps_per_epoch
    warmup = max(1, int(recipe.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class SegmentationLoss(nn.Module):
    def __init__(self, weights: torch.Tensor, ignore_index: int, dice_weight: float) -> None:
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)
        self.dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=ignore_index)
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.cross_entropy(logits, target)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss


@torch.inference_mode()
def validate(network: nn.Module, dataset: SegmentationFolder, card: ModelCard, device: torch.device, batch_size: int) -> dict:
    """Full-resolution validation (padded like the server pads), scored as ``prelabel evaluate``
    scores: a class absent from both labels and predictions is left out of the mean (it counted as
    0 here, so training picked its best epoch by another number than the one evaluation reports)."""
    network.eval()
    confusion = np.zeros((card.num_classes, card.num_classes), np.int64)
    for items in _same_size_batches(dataset, batch_size):
        images = torch.stack([img for img, _ in items])
        labels = torch.stack([lab for _, lab in items])
        height, width = images.shape[-2:]
        padded = torch.from_numpy(pad_to_multiple(images.permute(2, 3, 0, 1).numpy(), card.output_stride))
        logits = network(padded.permute(2, 3, 0, 1).contiguous().to(device))[..., :height, :width].cpu()
        confusion += confusion_matrix(labels.numpy(), logits.argmax(1).numpy(), card.num_classes, card.ignore_index)
    scores = segmentation_scores(confusion)
    return {"miou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy, "iou": list(scores.iou)}


def _same_size_batches(dataset: SegmentationFolder, batch_size: int) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Consecutive items of one size, up to ``batch_size``: a val split may mix image sizes."""
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index in range(len(dataset)):
        item = dataset[index]
        if batch and (len(batch) == batch_size or item[0].shape != batch[0][0].shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _initial_network(run: TrainingRun) -> SegmentationNetwork:
    if run.init is None:
        return build_network(run.config.card)
    base = ModelPackage.open(run.init)
    if base.card.num_classes != run.config.card.num_classes:
        raise ModelPackageError(f"--init {run.init} has {base.card.num_classes} classes, the config's card "
                                f"{run.config.card.num_classes}: start from a package with the same classes")
    return load_network(run.config.card, base.weights_path)


def _write_package(network: nn.Module, card: ModelCard, out: Path, provenance: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_weights(network, out / card.weights)
    for stale_onnx in (card.onnx, card.trunk_onnx, card.head_onnx):
        (out / stale_onnx).unlink(missing_ok=True)  # the weights changed: `prelabel export` must run again
    card.model_copy(update={"provenance": provenance}).save(out)


UNVALIDATED = {"miou": float("nan"), "pixel_accuracy": float("nan"), "iou": []}


def _keep_epoch(best: dict | None, metrics: dict, select_on_val: bool) -> bool:
    """Without validation every epoch replaces the package, so the last one is kept."""
    return not select_on_val or best is None or metrics["miou"] > best["val_miou"]


def train(run: TrainingRun) -> dict:
    """Runs (or resumes) training; returns the best validation metrics."""
    card, recipe = run.config.card, run.config.recipe
    keep_freed_memory()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    if run.out.exists() and not run.out.is_dir():  # found now, not after hours of training
        raise NotADirectoryError(f"--out {run.out} is a file: the model package is written into a folder")
    _seed_everything(recipe.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Crops pad their labels with the ignore index; a card without one gets a value that is no class
    # (uint8 labels turned the -100 used before into class 0, so padding was trained as class 0).
    ignore = card.ignore_index if card.ignore_index is not None else PAD_LABEL
    network = _initial_network(run).to(device)  # before the data: a card smp cannot build fails at once

    train_pairs = paired_files(split_folders(run.data_root, "train"))
    val_pairs = paired_files(split_folders(run.data_root, "val"))[: recipe.max_val_images]
    augment = training_augmentation(recipe.crop, recipe.scale_range, recipe.color_jitter, ignore)
    train_set = SegmentationFolder(train_pairs, card, augment)
    val_set = SegmentationFolder(val_pairs, card)
    _check_trainable(train_set, ignore)
    loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, drop_last=len(train_set) > recipe.batch_size)
    steps_per_epoch = min(len(loader), recipe.max_steps_per_epoch or len(loader))

    weights = class_weights(class_frequencies(train_set.labels, card.num_classes), recipe.class_weighting)
    criterion = SegmentationLoss(weights.to(device), ignore, recipe.dice_weight)
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = lr_schedule(optimizer, recipe, steps_per_epoch)

    state = {"epoch": 0, "best": None, "seconds": 0.0}
    checkpoint_path = run.run_dir / CHECKPOINT
    if not run.resume and checkpoint_path.is_file():
        raise FileExistsError(f"{run.run_dir} already holds a run: pass --resume to continue it, "
                              "or choose another --run-dir")
    if run.resume and not checkpoint_path.is_file():  # a mistyped --run-dir must not restart a run of hours
        raise FileNotFoundError(f"nothing to resume: {checkpoint_path} does not exist; check --run-dir, or drop "
                                "--resume to start afresh")
    run.run_dir.mkdir(parents=True, exist_ok=True)  # after the checks: a refused --resume left an empty folder
    if run.resume:
        state = _load_checkpoint(checkpoint_path, network, optimizer, scheduler, device)
        if state["epoch"] >= recipe.epochs:
            raise DatasetError(f"nothing to resume: the run in {run.run_dir} has already run its {state['epoch']} "
                               f"epochs; raise --epochs to train on")
        print(f"resumed from {checkpoint_path} after epoch {state['epoch']}", file=sys.stderr)

    if run.init is not None and recipe.select_on_val and "init_val_miou" not in state:
        # The base's own score, so that a fine-tune that made the model worse says so (once, and
        # kept in the checkpoint for a resumed run).
        state["init_val_miou"] = validate(network, val_set, card, device, recipe.val_batch_size)["miou"]
        print(f"base {run.init}: val mIoU {state['init_val_miou']:.4f}", file=sys.stderr, flush=True)
    command = "prelabel " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("prelabel") else shlex.join(sys.argv)
    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        started = time.perf_counter()
        # albumentations draws from its own generator, not the global seeds: seed it per epoch so a
        # run (and a resumed run) is reproducible.
        augment.set_random_seed(int(np.random.SeedSequence([recipe.seed, epoch]).generate_state(1)[0]))
        network.train()
        losses = []
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch}/{recipe.epochs}", leave=False, mininterval=5)
        for step, (images, labels) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            images, labels = images.to(device), labels.to(device)
            loss = criterion(network(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        metrics = validate(network, val_set, card, device, recipe.val_batch_size) if recipe.select_on_val else UNVALIDATED
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_miou": metrics["miou"],
                  "val_pixel_accuracy": metrics["pixel_accuracy"], "val_iou": metrics["iou"],
                  "lr": scheduler.get_last_lr()[0], "seconds": state["seconds"]}
        if _keep_epoch(state["best"], metrics, recipe.select_on_val):
            state["best"] = {k: record[k] for k in ("epoch", "val_miou", "val_pixel_accuracy", "val_iou")}
            provenance = {"command": command, "hardware": _hardware(device), "recipe": recipe.model_dump(mode="json"),
                          "best_epoch": epoch, "epochs_run": epoch, "training_seconds": round(state["seconds"], 1),
                          "train_images": len(train_set), "val_images": len(val_set), "val": state["best"],
                          "init": str(run.init) if run.init else None, "init_val_miou": state.get("init_val_miou")}
            _write_package(network, card, run.out, provenance)
        # Checkpoint before the log line: a crash in between loses a line, never duplicates one.
        _save_checkpoint(checkpoint_path, network, optimizer, scheduler, state)
        with open(run.run_dir / METRICS_LOG, "a") as log:
            log.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        print(f"epoch {epoch}: loss {record['train_loss']:.4f}  val mIoU {metrics['miou']:.4f}  "
              f"pixel acc {metrics['pixel_accuracy']:.4f}  ({state['seconds'] / 60:.1f} min)", file=sys.stderr, flush=True)
    _record_epochs_run(run.out, state["epoch"])
    _warn_if_worse_than_base(state)
    return state["best"]


def _warn_if_worse_than_base(state: dict) -> None:
    base, best = state.get("init_val_miou"), state["best"]
    if base is not None and best is not None and best["val_miou"] < base:
        print(f"warning: the fine-tuned package scores below its base on val (mIoU {best['val_miou']:.4f} against "
              f"{base:.4f}): keep serving the base, or fine-tune longer or at a lower learning rate", file=sys.stderr)


PAD_LABEL = 255  # the ignore value of crops' padding when the card has no ignore index


def _check_trainable(train_set: SegmentationFolder, ignore: int) -> None:
    """Refuses a train split that cannot train: one image (a batch of one breaks batch norm in
    DeepLabV3+'s image pooling), or labels with no pixel of any class (the loss was NaN)."""
    if len(train_set) < 2:
        raise DatasetError(f"the train split has {len(train_set)} image(s): training needs at least 2")
    if not any(np.any(label != ignore) for label in train_set.labels):
        raise DatasetError(f"every train label pixel is the ignore index {ignore}: there is nothing to learn from")


def _json_safe(value: object) -> object:
    """NaN and infinities as null: bare NaN is not JSON (an unvalidated epoch's scores are NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _record_epochs_run(out: Path, epochs: int) -> None:
    """The package was written at its best epoch; its provenance learns how many epochs ran in all."""
    if not (out / CARD_FILE).is_file():
        return
    card = ModelCard.load(out)
    if card.provenance.get("epochs_run", epochs) != epochs:
        card.model_copy(update={"provenance": {**card.provenance, "epochs_run": epochs}}).save(out)


def _save_checkpoint(path: Path, network: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    """Everything needed to resume exactly: weights, optimiser, schedule, progress and RNG states."""
    partial = path.with_suffix(".tmp")
    torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "state": state, "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}, partial)
    os.replace(partial, path)


def _load_checkpoint(path: Path, network: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> dict:
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch reports a damaged file as pickling or value errors
        raise OSError(f"cannot resume from {path}: it is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    try:
        network.load_state_dict(checkpoint["network"])
    except RuntimeError:
        raise OSError(f"cannot resume from {path}: it holds another network than the config's card describes "
                      "(architecture, encoder or classes changed?); resume with the config the run started with") from None
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    np.random.set_state(checkpoint["numpy_rng"])
    random.setstate(checkpoint["python_rng"])
    return checkpoint["state"]
