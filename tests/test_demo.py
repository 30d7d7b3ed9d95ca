"""`matcher demo`: the README's first command runs end to end on real faces."""

from __future__ import annotations

import pytest

from matcher import demo


def test_demo_falls_back_to_the_astronaut(engine, monkeypatch):
    pytest.importorskip("skimage.data", reason="scikit-image provides the fallback face")
    monkeypatch.setattr(demo, "default_lfw_dir", lambda: None)
    lines = []
    summary = demo.run(engine, None, 10, echo=lines.append)
    assert summary["faces"] == 1
    assert min(summary["similarities"].values()) > 0.7
    assert any("astronaut" in ln for ln in lines)


def test_demo_on_lfw_pairs(engine, lfw_dir):
    lines = []
    s = demo.run(engine, lfw_dir, 40, echo=lines.append)
    assert s["images"] == s["templates"] and s["pairs_scored"] == 40
    assert s["accuracy"] >= 0.9 and s["genuine_mean"] > s["impostor_mean"] + 0.3
    assert "fnmr_at_0.001" in s and any("calibrated FMR" in ln for ln in lines)


def test_demo_on_a_labelled_folder(engine, lfw_dir, tmp_path):
    import shutil

    people = sorted(p for p in (lfw_dir / "images").iterdir() if len(list(p.iterdir())) >= 2)[:4]
    for p in people:
        shutil.copytree(p, tmp_path / p.name)
    s = demo.run(engine, tmp_path, 8, echo=lambda _: None)
    assert s["pairs_scored"] >= 6
