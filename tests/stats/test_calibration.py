"""ECE (equal-count bins) and Brier score."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from dlum.stats import calibration_summary, expected_calibration_error


def test_hand_computed_ece_and_sklearns_brier():
    y = [0, 1, 0, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.8, 0.9]
    # bins of two by P: (0.1, 0.2) obs 0.5 mean 0.15; (0.3, 0.6) 0.5 vs 0.45; (0.8, 0.9) 1 vs 0.85
    expected = (abs(0.5 - 0.15) + abs(0.5 - 0.45) + abs(1 - 0.85)) / 3
    summary = calibration_summary(y, p, bins=3)
    assert summary.ece == pytest.approx(expected, abs=1e-12)
    assert summary.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert summary.observed == pytest.approx(4 / 6)


def test_calibrated_probabilities_have_a_small_ece_and_shifted_ones_a_large_one():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.1


def test_probabilities_outside_0_1_are_refused():
    from dlum.errors import InputError

    with pytest.raises(InputError):
        calibration_summary([0, 1], [0.2, 1.2])
