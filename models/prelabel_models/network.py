"""Builds the PyTorch network a model card describes, and moves weights in and out of safetensors.

Imports torch: only the torch backend, export and training use this module.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prelabel_models.card import ModelCard
from prelabel_models.package import ModelPackageError


class SegmentationNetwork(nn.Module):
    """An smp model split into a deterministic trunk and a (possibly stochastic) head.

    Keeping dropout just before the segmentation head lets MC-dropout sampling run the encoder and
    decoder once and only the cheap head many times.
    """

    def __init__(self, card: ModelCard) -> None:
        super().__init__()
        _check_known(card)
        self.smp_model = smp.create_model(
            card.architecture,
            encoder_name=card.encoder,
            encoder_weights=None,
            in_channels=card.in_channels,
            classes=card.num_classes,
        )
        self.head_dropout = nn.Dropout(card.head_dropout) if card.head_dropout > 0 else nn.Identity()
        needed = getattr(self.smp_model.encoder, "output_stride", 1)
        if card.output_stride % needed:  # smaller padding fails inside the network on most image sizes
            raise ModelPackageError(f"card output_stride {card.output_stride} must be a multiple of {needed}, the "
                                    f"stride of the {card.architecture}/{card.encoder} network")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Decoder output before the head: computed once per image."""
        return self.smp_model.decoder(self.smp_model.encoder(images))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.smp_model.segmentation_head(self.head_dropout(features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def logits_and_embedding(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the image embedding (the deepest encoder stage, average-pooled): the pool
        ranker's diversity needs the embedding, and it costs nothing on top of the forward pass."""
        stages = self.smp_model.encoder(images)
        embedding = stages[-1].mean(dim=(2, 3))
        return self.head(self.smp_model.decoder(stages)), embedding

    def masked_head(self, features: torch.Tensor, dropout_mask: torch.Tensor) -> torch.Tensor:
        """The head with dropout given as an explicit mask (0 or 1/(1-p) per element): MC-dropout
        samples are then reproducible, and identical on every backend for the same mask.

        Features (1, F, h, w) broadcast against masks (S, F, h, w), so S samples need no copies of
        the features. The logits stay at the decoder's resolution (smp's head would upsample them
        4x on DeepLabV3+): the sample statistics are computed there and only the final maps are
        upsampled, 16x fewer pixels to reduce per sample.
        """
        convolution, _upsampling, activation = self.smp_model.segmentation_head
        return activation(convolution(features * dropout_mask))


class EmbeddingGraph(nn.Module):
    """Images → (logits, embedding): the graph ``model.onnx`` holds."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.logits_and_embedding(images)


class TrunkGraph(nn.Module):
    """Images → decoder features: what MC dropout runs once per image."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.features(images)


class MaskedHeadGraph(nn.Module):
    """(features, dropout mask) → logits: what MC dropout runs once per sample."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, features: torch.Tensor, dropout_mask: torch.Tensor) -> torch.Tensor:
        return self.network.masked_head(features, dropout_mask)


def _check_known(card: ModelCard) -> None:
    """smp raises a bare KeyError for a name it lacks; the card is what the user must fix."""
    architectures = {name.lower(): name for name in smp.MODEL_ARCHITECTURES_MAPPING} \
        if hasattr(smp, "MODEL_ARCHITECTURES_MAPPING") else None
    if architectures is not None and card.architecture.lower() not in architectures:
        raise ModelPackageError(f"card architecture {card.architecture!r} is not a segmentation-models-pytorch "
                                f"architecture: choose one of {sorted(architectures.values())}")
    if card.encoder not in smp.encoders.get_encoder_names():
        raise ModelPackageError(f"card encoder {card.encoder!r} is not a segmentation-models-pytorch encoder "
                                "(smp.encoders.get_encoder_names() lists them), e.g. resnet18 or mobilenet_v2")


def build_network(card: ModelCard) -> SegmentationNetwork:
    """A randomly initialised network for ``card`` (never downloads encoder weights)."""
    return SegmentationNetwork(card)


def load_network(card: ModelCard, weights: Path) -> SegmentationNetwork:
    """The card's network with ``weights``; a file that is not safetensors, or holds another
    network's weights, is the package's fault (ModelPackageError), not a crash."""
    network = build_network(card)
    try:
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
    except SafetensorError as exc:
        raise ModelPackageError(f"{weights} is not a readable safetensors file ({exc})") from None
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ModelPackageError(f"{weights} does not hold the weights of the card's {card.architecture}/"
                                f"{card.encoder} network: {details[0][:300] if details else exc}") from None
    return network.eval()


def save_weights(network: nn.Module, path: Path, half: bool = True) -> None:
    """Writes weights as safetensors; fp16 halves the file with no measurable effect on masks."""
    state = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value
    save_file(state, str(path))
    path.chmod(0o644)  # safetensors writes 0600: a server running as another user could not read the package
