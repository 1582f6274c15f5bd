"""The ensemble detector's scale: percentiles among the bank's scores, averaged, ties broken."""

from __future__ import annotations

import numpy as np

from selfsup.evaluate.ensemble import ensemble_scores, percentile, reference_rows


def test_percentiles_put_two_detectors_on_one_scale_and_agreeing_outliers_win():
    ref_a, ref_b = np.arange(100.0), np.arange(100.0) * 1000  # the same ranks, scales 1000x apart
    assert np.allclose(percentile(ref_a, [-1, 49.5, 99, 500]), [0, 0.5, 1.0, 1.0])
    test_a, test_b = np.array([10.0, 90.0, 500.0, 95.0]), np.array([90_000.0, 10_000.0, 600_000.0, 95_000.0])
    s = ensemble_scores([(ref_a, test_a), (ref_b, test_b)])
    assert s[0] == s[1] or abs(s[0] - s[1]) < 1e-3  # one high, one low: the same middle rank, scale or not
    assert s[2] > s[3] > s[0]  # beyond every reference in both: first; high in both: second
    assert len(reference_rows(5000)) == 2000 and np.array_equal(reference_rows(10), np.arange(10))
