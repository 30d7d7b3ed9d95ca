"""5-second soak: 8 threads verify / identify / enrol / remove on one Engine + Gallery; the
final gallery must equal the replay of the accepted operations (scripts/soak.py runs 60 s)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("skimage.data", reason="the image path uses scikit-image's astronaut")

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"
_spec = importlib.util.spec_from_file_location("matcher_soak", _PATH)
soak = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = soak
_spec.loader.exec_module(soak)


def test_soak_5s(engine) -> None:
    rep = soak.run(5.0, 8, synthetic=True, pool_size=200, engine=engine, image_every=40,
                   rss_bound_mb=200.0)
    print(rep)
    assert rep["consistent"], rep["consistency_problems"]
    assert rep["unexpected_errors"] == 0, rep["error_samples"]
    kinds = rep["by_kind"]
    for k in ("verify", "identify", "enroll", "remove", "identify_image"):
        assert kinds.get(k, {}).get("count", 0) > 0, k
    assert rep["rss_mb"]["within_bound"], rep["rss_mb"]
