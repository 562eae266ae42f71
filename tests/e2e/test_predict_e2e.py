"""Predict end to end on real CamVid images: the real server (once per backend) and the real client."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prelabel_client import PreLabelClient
from prelabel_server.grpc_api.server import RunningServer
from service_packages import CAMVID_CLASSES
from service_support import DEFAULT_MODEL, NUM_CLASSES

FLOAT16_STEP = 1e-3  # float16 resolution near 1 is ~5e-4


def _check_maps(prediction, height: int, width: int) -> None:
    assert prediction.mask.shape == (height, width)
    assert prediction.mask.dtype == np.uint8
    assert prediction.mask.max() < NUM_CLASSES
    assert prediction.uncertainty.shape == (height, width)
    assert 0.0 <= prediction.uncertainty.min() and prediction.uncertainty.max() <= 1.0
    assert (prediction.response.height, prediction.response.width) == (height, width)


class TestPredict:
    """Runs once per backend (the ``server`` fixture is parametrised over onnx and torch)."""

    def test_camvid_images_get_a_full_size_mask_and_uncertainty_map(
            self, client: PreLabelClient, server: RunningServer, camvid_val_images: list[Path]) -> None:
        for path in (camvid_val_images[0], camvid_val_images[-1]):
            prediction = client.predict(path)
            _check_maps(prediction, 360, 480)
            assert len(np.unique(prediction.mask)) > 1, "a spread-logit model should not paint one class"
            assert prediction.uncertainty.std() > 0.05
            assert prediction.tiles == 4  # 480x360 padded to 480x368 in 256-pixel tiles: 2 x 2
            assert prediction.model == DEFAULT_MODEL and prediction.model_version == "1"
            assert prediction.backend == server.engine.settings.backend and prediction.device == "cpu"
            timings = prediction.timings_ms
            assert timings["inference"] > 0 and timings["total"] >= timings["inference"] >= timings["queue"] >= 0

    def test_summary_agrees_with_the_maps(self, client: PreLabelClient, small_camvid_png: bytes) -> None:
        prediction = client.predict(small_camvid_png, outputs=("mask", "uncertainty"),
                                    uncertainty_format="raw_float16", uncertainty_threshold=0.3)
        summary, mask, uncertainty = prediction.summary, prediction.mask, prediction.uncertainty
        fractions = np.array([c.pixel_fraction for c in summary.classes])
        assert [c.class_id for c in summary.classes] == list(range(NUM_CLASSES))
        assert [c.name for c in summary.classes] == [name for name, _ in CAMVID_CLASSES]
        assert fractions.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(fractions, np.bincount(mask.ravel(), minlength=NUM_CLASSES) / mask.size, atol=1e-6)
        for share in summary.classes:
            if share.pixel_fraction == 0:
                assert share.mean_confidence == 0
            else:  # the top class of C has probability >= 1/C
                assert 1 / NUM_CLASSES - 1e-6 <= share.mean_confidence <= 1
        assert summary.measure == "entropy" and summary.uncertainty_threshold == pytest.approx(0.3)
        assert summary.mean_uncertainty == pytest.approx(uncertainty.mean(), abs=FLOAT16_STEP)
        assert summary.uncertain_fraction == pytest.approx((uncertainty > 0.3).mean(), abs=0.005)

    def test_mask_as_palette_png_and_raw_are_the_same(self, client: PreLabelClient, small_camvid_png: bytes) -> None:
        png = client.predict(small_camvid_png, outputs=("mask",), mask_format="png_uint8")
        raw = client.predict(small_camvid_png, outputs=("mask",), mask_format="raw_uint8")
        np.testing.assert_array_equal(png.mask, raw.mask)
        assert png.uncertainty is None and raw.uncertainty is None and png.probabilities is None

    @pytest.mark.parametrize("format_", ["png_uint8", "png_uint16", "raw_float16"])
    def test_uncertainty_formats_agree(self, client: PreLabelClient, small_camvid_png: bytes, format_: str) -> None:
        step = {"png_uint8": 1 / 255, "png_uint16": 1 / 65535, "raw_float16": FLOAT16_STEP}[format_]
        reference = client.predict(small_camvid_png, outputs=("uncertainty",), uncertainty_format="raw_float16")
        prediction = client.predict(small_camvid_png, outputs=("uncertainty",), uncertainty_format=format_)
        assert prediction.mask is None
        assert prediction.uncertainty.shape == (101, 133)
        assert 0 <= prediction.uncertainty.min() and prediction.uncertainty.max() <= 1
        np.testing.assert_allclose(prediction.uncertainty, reference.uncertainty, atol=step + FLOAT16_STEP)

    @pytest.mark.parametrize("format_", ["raw_float16", "raw_uint8"])
    def test_probabilities_sum_to_one_and_give_the_mask(self, client: PreLabelClient, small_camvid_png: bytes,
                                                        format_: str) -> None:
        tolerance = {"raw_float16": 0.01, "raw_uint8": NUM_CLASSES * 0.5 / 255}[format_]  # rounding of C values
        prediction = client.predict(small_camvid_png, outputs=("mask", "probabilities"), probabilities_format=format_)
        probabilities = prediction.probabilities
        assert probabilities.shape == (NUM_CLASSES, 101, 133)
        assert probabilities.min() >= 0 and probabilities.max() <= 1
        np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=tolerance)
        top_two = np.sort(probabilities, axis=0)[-2:]
        clear = top_two[1] - top_two[0] > 2 * tolerance  # pixels whose argmax survives the rounding
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(probabilities.argmax(axis=0)[clear], prediction.mask[clear])

    @pytest.mark.parametrize("measure", ["entropy", "margin", "least_confidence"])
    def test_each_uncertainty_measure_follows_its_definition(self, client: PreLabelClient, small_camvid_png: bytes,
                                                             measure: str) -> None:
        prediction = client.predict(small_camvid_png, outputs=("uncertainty", "probabilities"), measure=measure,
                                    uncertainty_format="raw_float16")
        p = prediction.probabilities.astype(np.float64)
        top_two = np.sort(p, axis=0)[-2:]
        expected = {
            "entropy": -(p * np.log(np.maximum(p, 1e-12))).sum(axis=0) / np.log(NUM_CLASSES),
            "margin": 1 - (top_two[1] - top_two[0]),
            "least_confidence": (1 - top_two[1]) * NUM_CLASSES / (NUM_CLASSES - 1),
        }[measure]
        assert prediction.summary.measure == measure
        np.testing.assert_allclose(prediction.uncertainty, np.clip(expected, 0, 1), atol=0.01)

    def test_raw_pixels_and_encoded_png_give_the_same_result(self, client: PreLabelClient, small_camvid_rgb: np.ndarray,
                                                             small_camvid_png: bytes) -> None:
        from_raw = client.predict(small_camvid_rgb)
        from_png = client.predict(small_camvid_png)
        np.testing.assert_array_equal(from_raw.mask, from_png.mask)
        np.testing.assert_array_equal(from_raw.uncertainty, from_png.uncertainty)

    def test_a_named_model_serves_the_request(self, client: PreLabelClient, camvid_val_images: list[Path]) -> None:
        prediction = client.predict(camvid_val_images[1], model="unet", model_version="1")
        assert prediction.model == "unet"
        _check_maps(prediction, 360, 480)

    def test_mask_png_carries_the_class_colours_as_palette(self, client: PreLabelClient, small_camvid_png: bytes) -> None:
        prediction = client.predict(small_camvid_png, outputs=("mask",))
        with Image.open(io.BytesIO(prediction.response.mask.data)) as png:
            assert png.mode == "P"
            palette = png.getpalette()[: 3 * NUM_CLASSES]
            np.testing.assert_array_equal(np.asarray(png), prediction.mask)
        assert [tuple(palette[i: i + 3]) for i in range(0, len(palette), 3)] == [c for _, c in CAMVID_CLASSES]
