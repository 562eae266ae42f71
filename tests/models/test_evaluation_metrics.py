"""The evaluation metrics on small cases checked by hand, plus cross-checks against libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score

from prelabel_models.evaluation.metrics import (
    PatchStats,
    confusion_matrix,
    misclassification_detection,
    patch_stats,
    pavpu,
    reliability_bins,
    segmentation_scores,
)


class TestSegmentationScores:
    # Two classes, ignore index 2. The ignored pixel is predicted 0: it must count nowhere.
    labels = np.array([[0, 0, 1], [1, 1, 2]], np.uint8)
    predictions = np.array([[0, 1, 1], [0, 1, 0]], np.uint8)

    def test_confusion_skips_the_ignore_index(self) -> None:
        confusion = confusion_matrix(self.labels, self.predictions, num_classes=2, ignore_index=2)
        np.testing.assert_array_equal(confusion, [[1, 1], [1, 2]])

    def test_scores_by_hand(self) -> None:
        scores = segmentation_scores(confusion_matrix(self.labels, self.predictions, 2, ignore_index=2))
        # IoU_0 = 1 / (2 + 2 - 1), IoU_1 = 2 / (3 + 3 - 2); recalls 1/2 and 2/3.
        assert scores.iou == pytest.approx((1 / 3, 1 / 2))
        assert scores.mean_iou == pytest.approx(5 / 12)
        assert scores.pixel_accuracy == pytest.approx(3 / 5)
        assert scores.class_accuracy == pytest.approx((1 / 2, 2 / 3))
        assert scores.mean_class_accuracy == pytest.approx(7 / 12)

    def test_a_stray_label_is_an_error_not_dropped(self) -> None:
        with pytest.raises(ValueError, match=r"labels \[2\]"):
            confusion_matrix(self.labels, self.predictions, num_classes=2, ignore_index=None)

    def test_absent_class_is_undefined_and_left_out_of_means(self) -> None:
        scores = segmentation_scores(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]))
        assert math.isnan(scores.iou[2]) and math.isnan(scores.class_accuracy[2])
        assert scores.mean_iou == pytest.approx((3 / 4 + 4 / 5) / 2)

    def test_confusions_add_up_over_images(self) -> None:
        rng = np.random.default_rng(0)
        labels, predictions = rng.integers(0, 4, (2, 10, 12)), rng.integers(0, 3, (2, 10, 12))
        whole = confusion_matrix(labels, predictions, 3, ignore_index=3)
        parts = sum(confusion_matrix(labels[i], predictions[i], 3, ignore_index=3) for i in range(2))
        np.testing.assert_array_equal(whole, parts)
        assert whole.sum() == np.count_nonzero(labels != 3)


class TestMisclassificationDetection:
    def test_auroc_and_aupr_by_hand(self) -> None:
        # Positives (wrong) score 0.35 and 0.8, negatives 0.1 and 0.4: 3 of 4 pairs ranked right.
        detection = misclassification_detection(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool))
        assert detection.auroc == pytest.approx(0.75)
        # Precision at each recall step: 1/1 (0.8), then 2/3 (0.35 after 0.4): AP = (1 + 2/3) / 2.
        assert detection.aupr == pytest.approx(5 / 6)
        assert detection.error_rate == pytest.approx(0.5)

    def test_matches_sklearn_on_random_scores(self) -> None:
        rng = np.random.default_rng(1)
        uncertainty = rng.random(5000).astype(np.float32).round(2)  # rounding makes many ties
        wrong = rng.random(5000) < uncertainty * 0.5
        detection = misclassification_detection(uncertainty, wrong)
        assert detection.auroc == pytest.approx(roc_auc_score(wrong, uncertainty))
        assert detection.aupr == pytest.approx(average_precision_score(wrong, uncertainty))

    def test_review_curve_by_hand(self) -> None:
        # 20 pixels, most uncertain first; the 4 wrong ones are ranked 1st, 3rd, 6th and 16th.
        uncertainty = np.linspace(1.0, 0.0, 20)
        wrong = np.zeros(20, bool)
        wrong[[0, 2, 5, 15]] = True
        detection = misclassification_detection(uncertainty, wrong, review_fractions=(0.05, 0.10, 0.20, 0.30))
        # Reviewing 1, 2, 4 and 6 pixels finds 1, 1, 2 and 3 of the 4 errors.
        assert detection.review == pytest.approx((0.25, 0.25, 0.5, 0.75))
        assert detection.curve.errors_found[0] == 0.0 and detection.curve.errors_found[-1] == pytest.approx(1.0)

    def test_ties_count_as_random_order(self) -> None:
        # One uncertainty value for every pixel: reviewing 10 % finds 10 % of errors, whatever the order.
        wrong = np.arange(100) < 30
        for order in (wrong, wrong[::-1]):
            detection = misclassification_detection(np.full(100, 0.5, np.float32), order)
            assert detection.review == pytest.approx((0.05, 0.10, 0.20))
            assert detection.auroc == pytest.approx(0.5)

    def test_no_errors_is_undefined_not_a_crash(self) -> None:
        detection = misclassification_detection(np.array([0.2, 0.3]), np.array([False, False]))
        assert math.isnan(detection.auroc) and math.isnan(detection.review[0])
        assert detection.error_rate == 0.0


class TestCalibration:
    def test_ece_by_hand(self) -> None:
        # Bin (0.867, 0.933]: conf 0.9, accuracy 3/4. Bin (0.6, 0.667]: conf 0.62, accuracy 1/2.
        confidence = np.array([0.9, 0.9, 0.9, 0.9, 0.62, 0.62], np.float32)
        correct = np.array([1, 1, 1, 0, 1, 0], bool)
        bins = reliability_bins(confidence, correct)
        assert bins.counts.sum() == 6 and bins.counts[13] == 4 and bins.counts[9] == 2
        assert bins.accuracy[13] == pytest.approx(0.75) and bins.mean_confidence[9] == pytest.approx(0.62)
        assert bins.ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.12, abs=1e-6)

    def test_perfectly_calibrated_bin_has_no_error(self) -> None:
        bins = reliability_bins(np.full(10, 0.7), np.arange(10) < 7)
        assert bins.ece == pytest.approx(0.0, abs=1e-12)

    def test_bins_match_sklearn_and_add_up(self) -> None:
        rng = np.random.default_rng(2)
        confidence = rng.uniform(0.1, 1.0, 4000)
        confidence[:15] = np.linspace(0, 1, 16)[1:]  # right edges (incl. 1.0) go in the bin they close
        correct = rng.random(4000) < confidence
        bins = reliability_bins(confidence, correct)
        accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15, strategy="uniform")
        filled = bins.counts > 0
        np.testing.assert_allclose(bins.accuracy[filled], accuracy)
        np.testing.assert_allclose(bins.mean_confidence[filled], mean_confidence)
        halves = reliability_bins(confidence[:1000], correct[:1000]) + reliability_bins(confidence[1000:], correct[1000:])
        np.testing.assert_array_equal(halves.counts, bins.counts)
        assert halves.ece == pytest.approx(bins.ece)

    def test_ece_matches_torchmetrics(self) -> None:
        torch = pytest.importorskip("torch")
        from torchmetrics.functional.classification import binary_calibration_error

        rng = np.random.default_rng(3)
        confidence = rng.uniform(0.2, 1.0, 20000).astype(np.float32)
        correct = rng.random(20000) < confidence ** 2  # over-confident
        reference = binary_calibration_error(torch.from_numpy(confidence), torch.from_numpy(correct.astype(np.int64)), n_bins=15)
        assert reliability_bins(confidence, correct).ece == pytest.approx(float(reference), abs=1e-5)


class TestPavpu:
    @staticmethod
    def _maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A 4x16 image = four 4x4 patches: A all right, B 10/16 right, C 6/16 right, D ignored."""
        correct = np.zeros((4, 16), bool)
        correct[:, 0:4] = True
        correct[:, 4:8] = (np.arange(16) < 10).reshape(4, 4)
        correct[:, 8:12] = (np.arange(16) < 6).reshape(4, 4)
        uncertainty = np.zeros((4, 16), np.float32)
        uncertainty[:, 0:4], uncertainty[:, 4:8], uncertainty[:, 8:12], uncertainty[:, 12:] = 0.1, 0.9, 0.7, 1.0
        valid = np.ones((4, 16), bool)
        valid[:, 12:] = False
        return correct, uncertainty, valid

    def test_pavpu_by_hand(self) -> None:
        stats = patch_stats(*self._maps())
        np.testing.assert_array_equal(stats.accurate, [True, True, False])  # D has no valid pixel
        np.testing.assert_allclose(stats.uncertainty, [0.1, 0.9, 0.7])
        # At 0.5: A accurate+certain, B accurate+uncertain, C inaccurate+uncertain -> (1 + 1) / 3.
        assert pavpu(stats, 0.5) == pytest.approx(2 / 3)
        assert pavpu(stats, 0.95) == pytest.approx(2 / 3)  # all certain: A and B count
        assert pavpu(stats, 0.05) == pytest.approx(1 / 3)  # all uncertain: only C counts

    def test_ignored_pixels_do_not_move_a_patch(self) -> None:
        correct = np.zeros((4, 4), bool)
        correct[:2] = True                # the valid half is all right ...
        uncertainty = np.zeros((4, 4), np.float32)
        uncertainty[2:] = 1.0             # ... and certain; the ignored half is wrong and uncertain
        valid = np.zeros((4, 4), bool)
        valid[:2] = True
        stats = patch_stats(correct, uncertainty, valid)
        assert stats.accurate.tolist() == [True] and stats.uncertainty.tolist() == [0.0]

    def test_partial_patches_at_the_border(self) -> None:
        stats = patch_stats(np.ones((5, 6), bool), np.zeros((5, 6), np.float32), np.ones((5, 6), bool))
        assert stats.accurate.size == 4   # 2 x 2 patches, the last row and column partial
        both = PatchStats.concatenate([stats, stats])
        assert both.accurate.size == 8 and pavpu(both) == 1.0
