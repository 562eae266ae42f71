"""``prelabel export``: writes a package's ONNX file and checks it against PyTorch on real images.

The ONNX graph has dynamic batch, height and width axes, so the server can batch and tile with it.
Parity tolerance (documented in README): the largest absolute logit difference must stay below
``MAX_LOGIT_DIFF`` and at least ``MIN_MASK_AGREEMENT`` of pixels must get the same class.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prelabel_models.backends.onnx_backend import (
    EMBEDDING_NAME,
    FEATURES_NAME,
    INPUT_NAME,
    MASK_NAME,
    OUTPUT_NAME,
    OnnxBackend,
)
from prelabel_models.backends.torch_backend import TorchBackend
from prelabel_models.image_files import list_images, read_rgb
from prelabel_models.network import EmbeddingGraph, MaskedHeadGraph, TrunkGraph, load_network
from prelabel_models.package import WEIGHTS_DIGEST_KEY, ModelPackage
from prelabel_models.predictor import Predictor

OPSET = 17
MAX_LOGIT_DIFF = 1e-2
MIN_MASK_AGREEMENT = 0.999


@dataclass(frozen=True)
class ParityReport:
    images: int
    max_logit_diff: float
    mask_agreement: float

    @property
    def passed(self) -> bool:
        return self.max_logit_diff <= MAX_LOGIT_DIFF and self.mask_agreement >= MIN_MASK_AGREEMENT

    def __str__(self) -> str:
        verdict = "OK" if self.passed else "FAILED"
        return (f"ONNX vs PyTorch on {self.images} images: max |logit diff| {self.max_logit_diff:.2e} "
                f"(limit {MAX_LOGIT_DIFF:.0e}), mask agreement {self.mask_agreement:.5%} "
                f"(limit {MIN_MASK_AGREEMENT:.1%}): {verdict}")


SPATIAL_AXES = {0: "batch", 2: "height", 3: "width"}


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], path: Path, opset: int,
            weights_digest: str, extra_outputs: dict[str, dict[int, str]] | None = None,
            axes: dict[str, dict[int, str]] | None = None) -> None:
    """Writes the graph with the digest of the weights it was made from (see WEIGHTS_DIGEST_KEY)."""
    import onnx

    dynamic = {name: SPATIAL_AXES for name in [*names, OUTPUT_NAME]} | (extra_outputs or {}) | (axes or {})
    exported = io.BytesIO()  # stamped in memory, then written once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, exported, input_names=names,
                          output_names=[OUTPUT_NAME, *(extra_outputs or {})],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    graph = onnx.load_from_string(exported.getvalue())
    onnx.helper.set_model_props(graph, {WEIGHTS_DIGEST_KEY: weights_digest})
    onnx.save(graph, str(path))


def export_onnx(package: ModelPackage, opset: int = OPSET) -> Path:
    """Traces the network at a stride-aligned size and writes ``package.onnx_path`` (outputs: logits
    and the image embedding); a model with
    head dropout also gets its trunk and masked head as separate graphs (MC dropout on ONNX)."""
    card = package.card
    network = load_network(card, package.weights_path)
    side = card.output_stride * max(1, 256 // card.output_stride)
    example = torch.zeros(1, card.in_channels, side, side)
    digest = package.weights_digest()
    _export(EmbeddingGraph(network).eval(), (example,), [INPUT_NAME], package.onnx_path, opset, digest,
            extra_outputs={EMBEDDING_NAME: {0: "batch"}})
    if card.head_dropout == 0:  # no MC dropout: graphs of an earlier export would be from other weights
        for stale in (package.trunk_onnx_path, package.head_onnx_path):
            stale.unlink(missing_ok=True)
    else:
        # Wrappers are built in eval mode: the exporter restores each module's mode afterwards.
        _export(TrunkGraph(network).eval(), (example,), [INPUT_NAME], package.trunk_onnx_path, opset, digest)
        with torch.no_grad():
            features = network.features(example)
        # Separate batch axes: one image's features broadcast against a batch of masks.
        masks = torch.ones(2, *features.shape[1:])
        _export(MaskedHeadGraph(network).eval(), (features, masks), [FEATURES_NAME, MASK_NAME], package.head_onnx_path,
                opset, digest, axes={FEATURES_NAME: {0: "images", 2: "height", 3: "width"}, MASK_NAME: SPATIAL_AXES,
                             OUTPUT_NAME: SPATIAL_AXES})
    return package.onnx_path


def check_parity(package: ModelPackage, images: list[Path]) -> ParityReport:
    """Runs both backends through the same Predictor on ``images`` and compares them."""
    torch_predictor = Predictor(package.card, TorchBackend(package, device="cpu"))
    onnx_predictor = Predictor(package.card, OnnxBackend(package))
    max_diff, agree, total = 0.0, 0, 0
    for path in images:
        image = read_rgb(path)
        reference, candidate = torch_predictor.logits(image), onnx_predictor.logits(image)
        max_diff = max(max_diff, float(np.abs(reference - candidate).max()))
        agree += int((reference.argmax(0) == candidate.argmax(0)).sum())
        total += reference[0].size
    return ParityReport(len(images), max_diff, agree / max(total, 1))


def export_and_check(package_dir: Path, check_dir: Path, max_images: int = 5) -> ParityReport:
    package = ModelPackage.open(package_dir)
    images = list_images(check_dir)[:max_images]  # checked first: an export that cannot be checked is not written
    if not images:
        raise FileNotFoundError(f"no images in {check_dir} to check the export on")
    export_onnx(package)
    return check_parity(package, images)
