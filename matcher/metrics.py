"""Verification metrics on genuine/impostor scores."""

from __future__ import annotations

import numpy as np


def best_threshold(scores: np.ndarray, genuine: np.ndarray) -> float:
    """Threshold maximising accuracy of ``score >= t`` on the given labelled scores."""
    order = np.argsort(scores)
    s, g = scores[order], genuine[order].astype(np.int64)
    # Accuracy when the threshold sits just above s[i]: impostors at or below i are right and
    # genuines above i are right.
    imp_below = np.cumsum(1 - g)
    gen_above = g.sum() - np.cumsum(g)
    acc = imp_below + gen_above
    i = int(np.argmax(acc))
    hi = s[i + 1] if i + 1 < len(s) else s[i] + 1e-6
    if (g.sum()) > acc[i]:  # accepting everything is better
        return float(s[0] - 1e-6)
    return float((s[i] + hi) / 2)


def protocol_accuracy(scores: np.ndarray, genuine: np.ndarray, folds: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW protocol: for each fold, pick the threshold on the other folds, test on it.

    Returns (mean accuracy, standard deviation, per-fold accuracies).
    """
    scores, genuine, folds = np.asarray(scores), np.asarray(genuine, bool), np.asarray(folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t = best_threshold(scores[~test], genuine[~test])
        accs.append(float(np.mean((scores[test] >= t) == genuine[test])))
    return float(np.mean(accs)), float(np.std(accs)), accs
