"""Epistemic uncertainty: MC dropout (encoder once, head per sample) and test-time augmentation,
on both backends, and the sample statistics on hand-checked cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prelabel_models import ModelPackage
from prelabel_models.backends import create_backend
from prelabel_models.epistemic import MC_MEASURES, dropout_mask_batches, dropout_masks, measure_map, sample_statistics
from prelabel_models.image_files import list_images, read_rgb
from prelabel_models.postprocessing import maps_from_statistics, segment_maps
from prelabel_models.predictor import MC_HEAD_BATCH, Predictor
from service_packages import build_package, camvid_card


def test_dropout_masks_are_inverted_and_seeded():
    masks = dropout_masks(4, (8, 16, 16), rate=0.25, seed=3)
    assert np.unique(masks).tolist() == pytest.approx([0.0, 1 / 0.75])
    assert abs((masks == 0).mean() - 0.25) < 0.03
    assert np.array_equal(masks, dropout_masks(4, (8, 16, 16), rate=0.25, seed=3))
    assert not np.array_equal(masks, dropout_masks(4, (8, 16, 16), rate=0.25, seed=4))


@pytest.mark.parametrize("samples", [1, 7, 8, 9, 64])
def test_dropout_masks_do_not_depend_on_the_batch_they_are_drawn_in(samples):
    """The head runs MC_HEAD_BATCH samples at a time; sample i must be the same mask however
    many samples are asked for and however they are batched (an odd feature size included)."""
    shape = (3, 5, 7)
    whole = dropout_masks(samples, shape, rate=0.25, seed=3)
    for batch in (4, 8, 12):
        batches = list(dropout_mask_batches(samples, shape, rate=0.25, seed=3, batch=batch))
        assert [len(b) for b in batches[:-1]] == [batch] * (len(batches) - 1)
        assert np.array_equal(np.concatenate(batches), whole)
    assert np.array_equal(dropout_masks(64, shape, rate=0.25, seed=3)[:samples], whole)
    with pytest.raises(ValueError, match="multiple of 4"):
        next(dropout_mask_batches(samples, shape, rate=0.25, seed=3, batch=3))


def test_sample_statistics_on_hand_checked_cases():
    sure, other = np.array([20.0, -20.0]), np.array([-20.0, 20.0])
    # pixel 0: both samples say class 0; pixel 1: the samples contradict each other.
    logits = np.stack([np.stack([sure, sure], axis=1), np.stack([sure, other], axis=1)])[:, :, None, :]
    stats = sample_statistics(logits.astype(np.float32))
    assert stats.predictive_entropy[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-4)
    assert stats.mutual_information[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-4)  # all epistemic
    assert stats.disagreement[0].tolist() == pytest.approx([0.0, 0.5])
    assert stats.variance[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-4)
    # Agreeing but individually unsure samples: high entropy, no mutual information.
    unsure = np.zeros((3, 2, 1, 1), np.float32)
    agreeing = sample_statistics(unsure)
    assert agreeing.predictive_entropy.item() == pytest.approx(1.0)
    assert agreeing.mutual_information.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="choose one of"):
        measure_map(agreeing, "nope")


@pytest.fixture(scope="module")
def dropout_package(tmp_path_factory: pytest.TempPathFactory, camvid_root: Path) -> ModelPackage:
    card = camvid_card("mc", "DeepLabV3Plus", "resnet18", output_stride=16, head_dropout=0.3)
    return build_package(tmp_path_factory.mktemp("mc") / "mc", card, list_images(camvid_root / "val")[:2])


@pytest.fixture(scope="module")
def image(camvid_root: Path) -> np.ndarray:
    return read_rgb(list_images(camvid_root / "val")[5])[:224, :320]


def test_export_writes_trunk_and_masked_head(dropout_package):
    assert dropout_package.trunk_onnx_path.is_file() and dropout_package.head_onnx_path.is_file()


def test_mc_dropout_agrees_across_backends_for_fixed_masks(dropout_package, image):
    predictors = {name: Predictor(dropout_package.card, create_backend(name, dropout_package)) for name in ("torch", "onnx")}
    samples = {name: predictor.mc_dropout_logits(image, 6, seed=7) for name, predictor in predictors.items()}
    # DeepLabV3+'s head works at a quarter of the (already stride-aligned) 224x320 input.
    assert samples["torch"].shape == (6, 11, 224 // 4, 320 // 4)
    assert np.abs(samples["torch"] - samples["onnx"]).max() < 1e-2
    assert not np.allclose(samples["torch"][0], samples["torch"][1]), "samples did not vary"
    torch_stats, onnx_stats = (predictor.mc_dropout_statistics(image, 6, seed=7) for predictor in predictors.values())
    assert torch_stats.mutual_information.shape == image.shape[:2]
    assert np.abs(torch_stats.mutual_information - onnx_stats.mutual_information).max() < 1e-3


def test_mc_dropout_runs_the_head_in_batches_and_then_gives_back_its_memory(dropout_package, image):
    backend = create_backend("onnx", dropout_package)
    predictor = Predictor(dropout_package.card, backend)
    samples = 2 * MC_HEAD_BATCH + 3
    batched = predictor.mc_dropout_logits(image, samples, seed=7)  # ends with release_idle_memory
    features = backend.features(predictor.model_input(image)[None])
    masks = dropout_masks(samples, features.shape[1:], dropout_package.card.head_dropout, seed=7)
    assert np.allclose(batched, backend.head(features, masks), atol=1e-5)
    assert np.allclose(predictor.mc_dropout_logits(image, 3, seed=7), batched[:3], atol=1e-5)
    # The arenas shrunk, each session still answers as before.
    single = predictor.logits(image)
    backend.release_idle_memory()
    assert np.array_equal(predictor.logits(image), single)
    assert np.array_equal(backend.features(predictor.model_input(image)[None]), features)


class _CountingReleases:
    """A real backend, counting the times it is asked to give its runtime's memory back."""

    def __init__(self, backend) -> None:
        self.backend, self.releases = backend, 0

    def __getattr__(self, name: str):
        return getattr(self.backend, name)

    def release_idle_memory(self) -> None:
        self.releases += 1
        self.backend.release_idle_memory()


def test_memory_is_given_back_after_tiled_images_and_large_mc_requests_only(dropout_package, image):
    """Also when a tiled image's caller leaves after its first band: a server kept 1 GB after a
    cancelled 4000x3000 photo before."""
    backend = _CountingReleases(create_backend("onnx", dropout_package))
    predictor = Predictor(dropout_package.card, backend)
    predictor.logits(image)
    predictor.mc_dropout_logits(image, MC_HEAD_BATCH)
    assert backend.releases == 0  # the sizes a server runs all day keep their memory
    large = np.tile(image, (3, 2, 1))  # 672x640, over the 512-pixel tiles
    assert predictor.needs_tiling(*large.shape[:2])
    predictor.logits(large)
    assert backend.releases == 1
    bands = predictor.logit_bands(large)
    next(bands)
    bands.close()
    assert backend.releases == 2
    predictor.mc_dropout_logits(image, MC_HEAD_BATCH + 1)
    assert backend.releases == 3


def test_mc_dropout_statistics_are_cropped_to_an_unaligned_image(dropout_package, image):
    odd = image[:211, :301]
    statistics = Predictor(dropout_package.card, create_backend("onnx", dropout_package)).mc_dropout_statistics(odd, 4)
    assert statistics.mean_probabilities.shape == (11, 211, 301)
    assert np.allclose(statistics.mean_probabilities.sum(axis=0), 1.0, atol=1e-4)


@pytest.mark.parametrize("measure", ["mc_entropy", "mutual_information", "mc_variance", "tta_entropy", "tta_disagreement"])
def test_sampled_maps_are_finite_in_unit_range_and_differ_from_single_pass(dropout_package, image, measure):
    predictor = Predictor(dropout_package.card, create_backend("onnx", dropout_package))
    statistics = predictor.mc_dropout_statistics(image, 8) if measure in MC_MEASURES else predictor.tta_statistics(image)
    maps = maps_from_statistics(statistics, measure)
    single = segment_maps(predictor.logits(image))
    assert maps.uncertainty.shape == image.shape[:2] and maps.mask.shape == image.shape[:2]
    assert np.isfinite(maps.uncertainty).all()
    assert 0.0 <= maps.uncertainty.min() and maps.uncertainty.max() <= 1.0
    assert maps.uncertainty.max() > 0
    assert np.abs(maps.uncertainty - single.uncertainty).mean() > 1e-3
    if measure in MC_MEASURES:  # same trunk, only the head varies: the mean stays close to one pass
        assert (maps.mask == single.mask).mean() > 0.5
