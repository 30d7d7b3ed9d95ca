"""Calibrated operating points: thresholds at target false match rates, stored in model cards.

A card's ``calibration`` maps a pipeline's model hash to a record: the thresholds per FMR and what
they came from (data, counts, date, engine). ``matcher calibrate`` recomputes a record from a
labelled folder: every same-person image pair is a genuine comparison and every cross-person pair
an impostor comparison.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

from matcher.errors import CalibrationError, InputError
from matcher.evaluation import (STANDARD_FMRS, Scores, all_pairs_scores, fmr_key, folder_templates,
                                threshold_at_fmr)
from matcher.models.cards import ModelCard


def thresholds_for(card: ModelCard, model_hash: str) -> dict[float, float]:
    """``{fmr: threshold}`` calibrated for ``model_hash`` (empty when there is none)."""
    record = card.extra.get("calibration", {}).get(model_hash)
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
        "date": _dt.date.today().isoformat(),
        "engine": {k: d[k] for k in ("backend", "precision", "detector_backend", "model", "model_hash")},
        "command": "matcher calibrate",
    }
    return record, scores


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


__all__ = ["calibrate", "lookup", "thresholds_for", "write_into_card", "CalibrationError"]
