"""Calibrated operating points: thresholds at target false match rates, stored in model cards.

A card's ``calibration`` maps a pipeline's model hash to a record: the thresholds per FMR and what
they came from (data, counts, date, engine). ``matcher calibrate`` recomputes a record from a
labelled folder: every same-person image pair is a genuine comparison and every cross-person pair
an impostor comparison.

1:N thresholds (FPIR). A non-mated search of a gallery of N templates is a false positive when the
best of its N impostor scores reaches the threshold. If scores were independent,
``FPIR(t, N) = 1 - (1 - FMR(t))^N``; on real faces they are not (some enrolled faces attract
impostors more than others), and on lfw-dev that formula under-states FPIR by 1.3-1.7x at
N >= 500 and FPIR 0.003. So thresholds come from real non-mated searches: for each gallery size of a
grid, galleries of N people (one image each) are searched with one image of every other person,
repeatedly, and the threshold for FPIR f is the lowest score reached by at most a fraction f of
those searches' best scores (``fpir_search`` in the record), provided those false positives come
from at least 10 distinct identity pairs (else the cell is left empty: a few look-alike or
mislabelled pairs must not set a threshold). Between grid sizes thresholds are
interpolated in log N; below the grid the smallest size's threshold holds (stricter); above the
largest size resolved for that FPIR the impostor tail (``impostor_tail``: thresholds on a log grid of FMR) is followed with the
formula's per-comparison FMR scaled by the correction measured at the largest calibrated size, an
extrapolation the record states. An FPIR off the grid, or one the tail cannot reach, is a
:class:`CalibrationError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from matcher.errors import CalibrationError, InputError
from matcher.evaluation import (
    STANDARD_FMRS,
    Scores,
    all_pairs_scores,
    fmr_key,
    folder_templates,
    threshold_at_fmr,
)
from matcher.models.cards import ModelCard


def calibration_record(card: ModelCard, model_hash: str) -> dict[str, Any] | None:
    """The card's calibration record for ``model_hash``, if any."""
    return card.extra.get("calibration", {}).get(model_hash)


def thresholds_for(card: ModelCard, model_hash: str) -> dict[float, float]:
    """``{fmr: threshold}`` calibrated for ``model_hash`` (empty when there is none)."""
    record = calibration_record(card, model_hash)
    if not record:
        return {}
    return {float(k): float(v) for k, v in record["fmr_thresholds"].items()}


def lookup(thresholds: dict[float, float], fmr: float, model: str) -> float:
    """The threshold for ``fmr``; :class:`CalibrationError` if it was not calibrated."""
    t = thresholds.get(fmr)
    if t is not None:
        return t
    for k, v in thresholds.items():
        if math.isclose(k, fmr, rel_tol=1e-9):
            return v
    have = ", ".join(f"{k:g}" for k in sorted(thresholds)) or "none"
    raise CalibrationError(f"no calibrated operating point at FMR {fmr:g} for {model} "
                           f"(calibrated: {have}); run `matcher calibrate`")


def calibrate(engine: Any, root: Path, *, fmrs=STANDARD_FMRS, data_name: str | None = None,
              progress: bool = False) -> tuple[dict[str, Any], Scores]:
    """Calibration record for ``engine``'s pipeline from the labelled folder ``root``."""
    vecs, labels, failures = folder_templates(engine, root, progress)
    scores = all_pairs_scores(vecs, labels)
    thresholds = {fmr_key(f): threshold_at_fmr(scores.impostor, f) for f in fmrs}
    tail = impostor_tail(scores)
    d = engine.describe()
    record = {
        "fmr_thresholds": thresholds,
        "metric": "cosine similarity; match when score >= threshold",
        "data": data_name or str(root),
        "images": len(labels) + sum(failures.values()),
        "subjects": len(set(labels)),
        "failures_to_acquire": failures,
        "genuine_comparisons": int(scores.genuine.size),
        "impostor_comparisons": int(scores.impostor.size),
        "fmr_at_threshold": {k: float(scores.fmr(v)) for k, v in thresholds.items()},
        "impostor_tail": tail,
        "fpir_search": nonmated_searches(vecs, labels, tail),
        "date": _dt.date.today().isoformat(),
        "engine": {k: d[k] for k in ("backend", "precision", "detector_backend", "model", "model_hash")},
        "command": "matcher calibrate",
    }
    return record, scores


#: Impostor-tail grid: FMR from 1e-1 down, ten points per decade, while >= 10 scores support it.
TAIL_STEP = 0.1
TAIL_MIN_SCORES = 10
FPIR_SIZES = (10, 30, 100, 300, 1000, 3000)
FPIR_TARGETS = (0.1, 0.03, 0.01, 0.003, 0.001)
#: An FPIR is read off a size's searches only when its false positives come from at least this many
#: distinct (probe person, gallery person) pairs: a handful of look-alike or mislabelled identity
#: pairs (LFW has some) must not set a threshold by themselves.
FPIR_MIN_PAIRS = 10


def impostor_tail(scores: Scores) -> dict[str, list[float]]:
    """Thresholds on a log grid of FMR (1e-1 downwards) read off sorted impostor scores."""
    n = scores.impostor.size
    fmrs, ts = [], []
    e = -1.0
    while n * 10 ** e >= TAIL_MIN_SCORES:
        f = 10 ** e
        fmrs.append(float(f))
        ts.append(threshold_at_fmr(scores.impostor, f))
        e = round(e - TAIL_STEP, 10)
    return {"fmr": fmrs, "threshold": ts}


def fpir_to_fmr(fpir: float, n: int) -> float:
    """Per-comparison FMR giving ``fpir`` for a gallery of ``n`` templates: 1 - (1 - fpir)^(1/n)."""
    if not 0.0 < fpir < 1.0:
        raise InputError(f"fpir must be in (0, 1), got {fpir}")
    return float(-np.expm1(np.log1p(-fpir) / max(int(n), 1)))


def threshold_for_fmr(tail: dict[str, list[float]], fmr: float) -> float:
    """Threshold at ``fmr`` interpolated in log FMR on the impostor tail."""
    f = np.asarray(tail["fmr"], dtype=np.float64)  # descending
    t = np.asarray(tail["threshold"], dtype=np.float64)
    if fmr < f[-1] * (1 - 1e-9):
        raise CalibrationError(f"FMR {fmr:.2e} is below what the calibration resolves "
                               f"({f[-1]:.2e}); use a smaller gallery or a larger FPIR")
    # Above the grid's top (FMR > 0.1) np.interp holds the top threshold: stricter, never looser.
    return float(np.interp(np.log10(fmr), np.log10(f[::-1]), t[::-1]))


def fmr_at_threshold(tail: dict[str, list[float]], threshold: float) -> float:
    """Per-comparison FMR of ``threshold``, interpolated in log FMR on the impostor tail."""
    f = np.log10(np.asarray(tail["fmr"], dtype=np.float64))
    t = np.asarray(tail["threshold"], dtype=np.float64)  # ascending as FMR falls
    return float(10 ** np.interp(threshold, t, f))


def nonmated_searches(vectors: np.ndarray, labels: list[str], tail: dict[str, list[float]],
                      sizes=FPIR_SIZES, fpirs=FPIR_TARGETS, repeats: int = 40,
                      seed: int = 0) -> dict[str, Any]:
    """Thresholds per (gallery size, FPIR) from real non-mated searches (see module doc)."""
    rng = np.random.default_rng(seed)
    people, inverse = np.unique(np.asarray(labels), return_inverse=True)
    rows = [np.flatnonzero(inverse == i) for i in range(len(people))]
    sizes = [n for n in sizes if n <= len(people) - 100]
    table: dict[str, Any] = {"sizes": sizes, "fpirs": list(fpirs), "searches": [],
                             "thresholds": [], "independence_formula_thresholds": []}
    for n in sizes:
        best, who = [], []
        for _ in range(repeats):
            order = rng.permutation(len(people))
            g_people, p_people = order[:n], order[n:]
            gallery = vectors[[rows[i][0] for i in g_people]]
            probes = vectors[[rng.choice(rows[i]) for i in p_people]]
            sim = probes @ gallery.T
            arg = sim.argmax(axis=1)
            best.append(sim[np.arange(len(p_people)), arg])
            who.append(p_people.astype(np.int64) * len(people) + g_people[arg])
        b, w = np.concatenate(best).astype(np.float64), np.concatenate(who)
        b_sorted = np.sort(b)
        cells = []
        for f in fpirs:
            t = threshold_at_fmr(b_sorted, f) if b.size * f >= 1 else None
            pairs = len(np.unique(w[b >= t])) if t is not None else 0
            cells.append(t if pairs >= FPIR_MIN_PAIRS else None)
        table["searches"].append(int(b.size))
        table["thresholds"].append(cells)
        table["independence_formula_thresholds"].append(
            [_formula_threshold(tail, f, n) for f in fpirs])
    return table


def _formula_threshold(tail: dict[str, list[float]], fpir: float, n: int) -> float | None:
    try:
        return threshold_for_fmr(tail, fpir_to_fmr(fpir, n))
    except CalibrationError:
        return None


def fpir_threshold(record: dict[str, Any], fpir: float, n: int) -> float:
    """Decision threshold for ``fpir`` at a gallery of ``n`` templates (see module doc)."""
    table, tail = record.get("fpir_search"), record.get("impostor_tail")
    if not table or not tail:
        raise CalibrationError("this calibration has no 1:N (FPIR) table; run `matcher calibrate`")
    col = next((j for j, f in enumerate(table["fpirs"]) if math.isclose(f, fpir, rel_tol=1e-9)),
               None)
    if col is None:
        have = ", ".join(f"{f:g}" for f in table["fpirs"])
        raise CalibrationError(f"no calibrated 1:N operating point at FPIR {fpir:g} "
                               f"(calibrated: {have})")
    pts = [(sz, row[col]) for sz, row in zip(table["sizes"], table["thresholds"])
           if row[col] is not None]
    if not pts:
        raise CalibrationError(f"FPIR {fpir:g} was not resolvable by the calibration searches")
    sizes = np.array([p[0] for p in pts], dtype=np.float64)
    ts = np.array([p[1] for p in pts], dtype=np.float64)
    n = max(int(n), 1)
    if n <= sizes[-1]:
        return float(np.interp(np.log(n), np.log(sizes), ts))
    # Extrapolation: the formula's per-comparison FMR, scaled by the correction at the last size.
    correction = fpir_to_fmr(fpir, int(sizes[-1])) / fmr_at_threshold(tail, ts[-1])
    return max(float(ts[-1]), threshold_for_fmr(tail, fpir_to_fmr(fpir, n) / max(correction, 1.0)))


def write_into_card(card_path: Path, model_hash: str, record: dict[str, Any]) -> None:
    """Store ``record`` under ``calibration[model_hash]`` in the card JSON at ``card_path``."""
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read model card {card_path}: {exc}") from exc
    card.setdefault("calibration", {})[model_hash] = record
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)



