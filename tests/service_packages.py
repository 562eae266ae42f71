"""Small, randomly initialised model packages for the service tests (until the trained default
model exists). Building one takes seconds on a CPU; every weight comes from ``torch.manual_seed``.

BatchNorm statistics are computed on a few real images and the head is scaled so that the logits
are spread (std ~3): masks then show several classes and uncertainty spans [0, 1] instead of
sitting at 1, as it does for a freshly initialised network.

``local=True`` (Unet only) makes a package whose mask depends on a ~25-pixel neighbourhood alone.
A random network's mask otherwise depends on far-away context as much as on the pixel itself, so
tiled and untiled masks would disagree on half the pixels for reasons unrelated to tiling. With a
local network they can only differ where tiling itself is wrong (misplaced tiles, bad blending or
padding at tile borders): what the seam test must catch.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from prelabel_models import ClassInfo, ModelCard, ModelPackage
from prelabel_models.export import export_onnx
from prelabel_models.image_files import read_rgb
from prelabel_models.network import SegmentationNetwork, build_network, save_weights
from prelabel_models.preprocessing import normalize

CAMVID_CLASSES = [
    ("Sky", (128, 128, 128)), ("Building", (128, 0, 0)), ("Pole", (192, 192, 128)), ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)), ("Tree", (128, 128, 0)), ("SignSymbol", (192, 128, 128)), ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)), ("Pedestrian", (64, 64, 0)), ("Bicyclist", (0, 128, 192)),
]
_LOGIT_STD = 3.0


def camvid_card(name: str, architecture: str, encoder: str, **fields: object) -> ModelCard:
    """A card for CamVid's 11 classes; ``fields`` override the rest (tile_size, output_stride...)."""
    classes = [ClassInfo(id=i, name=n, color=c) for i, (n, c) in enumerate(CAMVID_CLASSES)]
    return ModelCard(name=name, version="1", description=f"test package: random {architecture}/{encoder}",
                     architecture=architecture, encoder=encoder, classes=classes, ignore_index=11, **fields)


def _make_local(network: SegmentationNetwork, kept_blocks: int = 2) -> None:
    """Silences every Unet decoder block but the last ``kept_blocks``: the mask then comes from the
    stride-2 encoder features alone (receptive field of about 25 pixels)."""
    blocks = network.smp_model.decoder.blocks
    for block in list(blocks)[: len(blocks) - kept_blocks]:
        norm = block.conv2[1]  # BatchNorm of the block's last conv: zero weight and bias, output 0
        nn.init.zeros_(norm.weight)
        nn.init.zeros_(norm.bias)


@torch.no_grad()
def _calibrate(network: SegmentationNetwork, images: torch.Tensor) -> None:
    """BatchNorm statistics from ``images`` (one cumulative pass), then logits scaled to std ~3."""
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    network.train()
    network(images)
    network.eval()
    head = network.smp_model.segmentation_head[0]
    scale = _LOGIT_STD / float(network(images).std())
    head.weight.mul_(scale)
    head.bias.mul_(scale)


def calibration_batch(images: list[Path], card: ModelCard, size: tuple[int, int] = (160, 128)) -> torch.Tensor:
    """Real images, shrunk to ``size`` (width, height), normalised as the card says."""
    return torch.from_numpy(np.stack([
        normalize(cv2.resize(read_rgb(p), size, interpolation=cv2.INTER_AREA), card.normalization) for p in images]))


def build_package(folder: Path, card: ModelCard, images: list[Path], *, local: bool = False,
                  onnx: bool = True, seed: int = 0) -> ModelPackage:
    """Writes card, fp16 safetensors weights and (``onnx``) the exported ONNX file into ``folder``."""
    torch.manual_seed(seed)
    network = build_network(card)
    if local:
        _make_local(network)
    _calibrate(network, calibration_batch(images, card))
    folder.mkdir(parents=True)
    save_weights(network, folder / card.weights)
    card.save(folder)
    package = ModelPackage.open(folder)
    if onnx:
        export_onnx(package)
    return package


def write_broken_packages(repository: Path) -> None:
    """``broken``: a valid card whose weights and ONNX file are missing; ``broken-card``: a card
    that is not valid (upper-case name, no classes)."""
    broken = repository / "broken"
    broken.mkdir(parents=True)
    camvid_card("broken", "Unet", "resnet18", weights="missing.safetensors", onnx="missing.onnx").save(broken)
    bad_card = repository / "broken-card"
    bad_card.mkdir(parents=True)
    (bad_card / "card.json").write_text(json.dumps({"name": "Not A Valid Name", "architecture": "Unet"}))
