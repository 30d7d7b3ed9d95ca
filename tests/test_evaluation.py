"""Evaluation maths on synthetic scores: thresholds, FMR/FNMR, EER, bootstrap, all-pairs scoring."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest

from matcher.errors import CalibrationError, InputError
from matcher.evaluation import (
    Scores,
    all_pairs_scores,
    eer,
    fmr_key,
    fnmr_at_fmr,
    summarise,
    threshold_at_fmr,
    write_report,
)
from matcher.metrics import best_threshold, protocol_accuracy


def test_threshold_at_fmr_counts_exactly():
    imp = np.sort(np.arange(1000, dtype=np.float64) / 1000)  # 0.000 .. 0.999
    t = threshold_at_fmr(imp, 1e-2)  # 10 impostors allowed at or above
    assert np.sum(imp >= t) == 10 and np.sum(imp >= np.nextafter(t, -np.inf)) == 11
    s = Scores(np.array([0.5, 0.995]), imp)
    assert s.fmr(t) == pytest.approx(0.01)
    assert s.fnmr(t) == pytest.approx(0.5)
    with pytest.raises(CalibrationError, match="cannot resolve"):
        threshold_at_fmr(imp, 1e-4)
    with pytest.raises(InputError):
        threshold_at_fmr(imp, 0.0)


def test_eer_and_fnmr_on_gaussians_match_theory():
    rng = np.random.default_rng(0)
    s = Scores(rng.normal(2, 1, 200_000), rng.normal(0, 1, 200_000))
    e, t = eer(s)
    assert e == pytest.approx(NormalDist().cdf(-1), abs=0.004) and t == pytest.approx(1, abs=0.02)
    r = fnmr_at_fmr(s, 1e-3, bootstrap=500)
    # threshold = z(0.999) for N(0,1); FNMR = P(N(2,1) < z) = Phi(z - 2)
    z = NormalDist().inv_cdf(0.999)
    assert r["threshold"] == pytest.approx(z, abs=0.05)
    assert r["fnmr"] == pytest.approx(NormalDist().cdf(z - 2), abs=0.01)
    lo, hi = r["fnmr_ci95"]
    assert lo <= r["fnmr"] <= hi and hi - lo < 0.03


def test_bootstrap_interval_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for n in (2_000, 200_000):
        r = fnmr_at_fmr(Scores(rng.normal(2, 1, n), rng.normal(0, 1, n)), 1e-2, bootstrap=400)
        widths.append(r["fnmr_ci95"][1] - r["fnmr_ci95"][0])
    assert widths[1] < widths[0] / 3


def test_all_pairs_scores_against_brute_force():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(7, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = ["a", "a", "b", "b", "b", "c", "d"]
    s = all_pairs_scores(v, labels, block=3)
    gen, imp = [], []
    for i in range(7):
        for j in range(i + 1, 7):
            (gen if labels[i] == labels[j] else imp).append(float(v[i] @ v[j]))
    np.testing.assert_allclose(s.genuine, np.sort(gen), atol=1e-6)
    np.testing.assert_allclose(s.impostor, np.sort(imp), atol=1e-6)
    with pytest.raises(InputError):
        all_pairs_scores(v[:2], ["a", "b"])  # no genuine pair


def test_scores_reject_bad_input():
    with pytest.raises(InputError):
        Scores(np.array([]), np.array([0.1]))
    with pytest.raises(InputError):
        Scores(np.array([np.nan]), np.array([0.1]))


def test_summary_marks_unresolvable_points_and_report_files(tmp_path):
    rng = np.random.default_rng(3)
    s = Scores(rng.normal(0.6, 0.1, 3000), rng.normal(0.05, 0.1, 5000))
    rep = summarise(s, bootstrap=100)
    assert "fnmr" in rep["fnmr_at_fmr"][fmr_key(1e-3)]
    assert "unresolved" in rep["fnmr_at_fmr"][fmr_key(1e-4)]
    roc = rep["roc"]
    assert len(roc["fmr"]) == len(roc["tmr"]) == len(roc["threshold"]) > 20
    assert np.all(np.diff(roc["threshold"]) > 0) and np.all(np.diff(roc["fmr"]) <= 0)
    assert np.all(np.diff(roc["tmr"]) <= 0)  # higher threshold: fewer of both kinds of match
    pytest.importorskip("matplotlib")
    js, png = write_report({"protocol": "all", **rep}, s, tmp_path / "out", "synthetic")
    assert json.loads(js.read_text())["impostor_scores"] == 5000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_protocol_accuracy_picks_threshold_on_other_folds():
    scores = np.array([0.9, 0.8, 0.1, 0.2] * 5)
    genuine = np.array([True, True, False, False] * 5)
    folds = np.repeat(np.arange(5), 4)
    acc, std, per = protocol_accuracy(scores, genuine, folds)
    assert acc == 1.0 and std == 0.0 and len(per) == 5
    assert 0.2 < best_threshold(scores, genuine) <= 0.8
