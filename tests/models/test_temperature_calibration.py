"""Temperature fitting on logits whose true temperature is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from prelabel_models.card import ModelCard
from prelabel_models.evaluation.calibration import (
    CalibrationResult,
    LogitSample,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    sample_pixels,
    write_temperature,
)

TRUE_TEMPERATURE = 2.5


@pytest.fixture(scope="module")
def overconfident() -> LogitSample:
    """Labels drawn from softmax(z); the "model" reports 2.5 z, so it is over-confident by T = 2.5."""
    rng = np.random.default_rng(0)
    calibrated = rng.normal(0.0, 1.5, (40_000, 6))
    cumulative = softmax(calibrated, axis=1).cumsum(axis=1)
    labels = np.minimum((cumulative < rng.random((len(calibrated), 1))).sum(axis=1), 5)
    return LogitSample((TRUE_TEMPERATURE * calibrated).astype(np.float32), labels.astype(np.int64))


def test_fit_recovers_the_temperature_and_lowers_nll(overconfident: LogitSample) -> None:
    temperature = fit_temperature(overconfident)
    assert temperature == pytest.approx(TRUE_TEMPERATURE, rel=0.05)
    assert negative_log_likelihood(overconfident, temperature) < negative_log_likelihood(overconfident) - 0.1
    assert expected_calibration_error(overconfident, temperature) < 0.02 < expected_calibration_error(overconfident)


def test_fit_is_the_minimum(overconfident: LogitSample) -> None:
    temperature = fit_temperature(overconfident)
    best = negative_log_likelihood(overconfident, temperature)
    for nearby in (0.9 * temperature, 1.1 * temperature):
        assert negative_log_likelihood(overconfident, nearby) > best


def test_under_confident_logits_get_a_temperature_below_one(overconfident: LogitSample) -> None:
    sharpened = LogitSample(overconfident.logits / (2 * TRUE_TEMPERATURE), overconfident.labels)
    assert fit_temperature(sharpened) == pytest.approx(0.5, rel=0.05)


def test_sample_pixels_skips_ignored_and_is_seeded() -> None:
    logits = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    label = np.full((4, 5), 9, np.uint8)
    label[1:3, 1:4] = 1
    first = sample_pixels(logits, label, 9, 4, np.random.default_rng(7))
    again = sample_pixels(logits, label, 9, 4, np.random.default_rng(7))
    assert first.labels.tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(first.logits, again.logits)
    # Each sampled row is the (class 0, class 1) logit pair of one pixel: class 1 = class 0 + 20.
    np.testing.assert_array_equal(first.logits[:, 1] - first.logits[:, 0], 20)
    assert sample_pixels(logits, label, 9, 100, np.random.default_rng(0)).labels.size == 6


def test_write_temperature_keeps_the_rest_of_the_card(tmp_path, repo_root) -> None:
    from prelabel_models.training.config import TrainConfig

    card = TrainConfig.load(repo_root / "models" / "configs" / "camvid.toml").card
    card.model_copy(update={"provenance": {"best_epoch": 3}}).save(tmp_path)
    result = CalibrationResult(temperature=1.37, previous_temperature=1.0, nll_before=0.5, nll_after=0.4,
                               ece_before=0.05, ece_after=0.01, pixels=1000, images=2, split="val", seed=0)
    write_temperature(tmp_path, result)
    updated = ModelCard.load(tmp_path)
    assert updated.temperature == 1.37
    assert updated.provenance["best_epoch"] == 3 and updated.provenance["calibration"]["nll_after"] == 0.4
    assert updated.model_copy(update={"temperature": 1.0, "provenance": {"best_epoch": 3}}) == card.model_copy(
        update={"provenance": {"best_epoch": 3}})
