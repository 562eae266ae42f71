"""The maps computed where the logits are (``device_maps``, used on a GPU) are the host's maps:
same mask (ties included), same confidence, uncertainty and probabilities, each image cropped to
its own size. Torch runs the same kernels' formulas on the CPU here; tests/server/test_cuda.py
checks the GPU itself where one is lent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prelabel_models import ModelPackage
from prelabel_models.backends.device_maps import batch_maps
from prelabel_models.backends.torch_backend import TorchBackend
from prelabel_models.image_files import list_images, read_rgb
from prelabel_models.postprocessing import ClassSums, MapRequest, class_sums, maps_of_batch, summarize
from prelabel_models.predictor import Predictor


def assert_same_maps(device, host, classes: int = 11) -> None:
    assert device.mask.dtype == np.uint8 and device.mask.shape == host.mask.shape
    np.testing.assert_array_equal(device.mask, host.mask)
    np.testing.assert_allclose(device.confidence, host.confidence, atol=2e-6)
    np.testing.assert_allclose(device.uncertainty, host.uncertainty, atol=2e-5)
    if host.probabilities is None:
        assert device.probabilities is None
    else:
        assert device.probabilities.dtype == np.float16
        np.testing.assert_allclose(device.probabilities.astype(np.float32), host.probabilities.astype(np.float32), atol=1e-3)
    assert host.class_sums is None, "the host leaves the class sums to the summary"
    expected = class_sums(host, classes)
    np.testing.assert_array_equal(device.class_sums.counts, expected.counts)
    np.testing.assert_allclose(device.class_sums.confidence_sums, expected.confidence_sums, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(device.class_sums.uncertainty_sums, expected.uncertainty_sums, rtol=1e-5, atol=1e-4)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("measure", ["entropy", "margin", "least_confidence"])
def test_each_measure_matches_the_host_including_ties(measure, device):
    rng = np.random.default_rng(7)
    logits = rng.integers(-3, 4, size=(3, 11, 24, 32)).astype(np.float32)  # whole numbers: many ties
    requests = [MapRequest(24, 32, measure), MapRequest(20, 27, measure, keep_probabilities=True), MapRequest(1, 5, measure)]
    on_device = batch_maps(torch.from_numpy(logits).to(device), 1.7, requests)
    host = maps_of_batch(logits, 1.7, requests)
    assert (np.sort(logits, axis=1)[:, -1] == np.sort(logits, axis=1)[:, -2]).any(), "the input must hold ties"
    for device_maps, host_maps in zip(on_device, host, strict=True):
        assert_same_maps(device_maps, host_maps)


def test_a_batch_mixing_measures_gives_each_image_its_own():
    logits = np.random.default_rng(3).standard_normal((3, 11, 16, 16)).astype(np.float32) * 4
    requests = [MapRequest(16, 16, "margin"), MapRequest(16, 16, "entropy"), MapRequest(16, 16, "least_confidence")]
    device = batch_maps(torch.from_numpy(logits), 1.0, requests)
    for device_maps, host_maps in zip(device, maps_of_batch(logits, 1.0, requests), strict=True):
        assert_same_maps(device_maps, host_maps)
    assert not np.allclose(device[0].uncertainty, device[1].uncertainty)


def test_the_real_model_gives_the_same_maps_both_ways(repo_root, camvid_root):
    package = ModelPackage.open(repo_root / "models" / "camvid")
    predictor = Predictor(package.card, TorchBackend(package, device="cpu"))
    frames = [read_rgb(p) for p in list_images(camvid_root / "val")[:2]]
    images = [frames[0], np.ascontiguousarray(frames[1][:355, :470])]  # two sizes, one padded shape
    inputs = np.stack([predictor.model_input(image) for image in images])
    requests = [MapRequest(360, 480, "entropy"), MapRequest(355, 470, "margin", keep_probabilities=True)]
    device = predictor.maps_of_inputs(inputs, requests)
    host = maps_of_batch(predictor.backend.run(inputs), package.card.temperature, requests)
    assert [m.mask.shape for m in device] == [(360, 480), (355, 470)]
    for device_maps, host_maps in zip(device, host, strict=True):
        assert_same_maps(device_maps, host_maps)


def test_the_summary_takes_the_class_sums_the_device_computed():
    logits = np.random.default_rng(5).standard_normal((1, 11, 40, 50)).astype(np.float32) * 3
    requests = [MapRequest(40, 50, "entropy")]
    device = batch_maps(torch.from_numpy(logits), 1.0, requests)[0]
    host = maps_of_batch(logits, 1.0, requests)[0]
    on_device, on_host = summarize(device, 11), summarize(host, 11)
    assert on_device.mean_uncertainty == pytest.approx(on_host.mean_uncertainty, abs=1e-6)
    for mine, theirs in zip(on_device.classes, on_host.classes, strict=True):
        assert mine.pixel_fraction == theirs.pixel_fraction
        assert mine.mean_confidence == pytest.approx(theirs.mean_confidence, abs=1e-5)
        assert mine.mean_uncertainty == pytest.approx(theirs.mean_uncertainty, abs=1e-5)
    device.class_sums = ClassSums(np.full(11, 200), np.full(11, 100.0), np.full(11, 50.0))
    assert [c.mean_confidence for c in summarize(device, 11).classes] == [0.5] * 11
