"""5-second soak: 8 threads verify / identify / enrol / remove on one Engine + Gallery; the
final gallery must equal the replay of the accepted operations (scripts/soak.py runs 60 s)."""

from __future__ import annotations

import pytest
from repo_scripts import load_script

pytest.importorskip("skimage.data", reason="the image path uses scikit-image's astronaut")

soak = load_script("scripts/soak.py", "matcher_soak")


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
