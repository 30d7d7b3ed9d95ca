"""Error-versus-reject characteristic: the curve's arithmetic and `matcher erc` end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from matcher.erc import erc_curve, genuine_pairs, impostor_threshold
from matcher.evaluation import all_pairs_scores, threshold_at_fmr


def test_rejecting_the_worst_quality_removes_its_misses():
    gen = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.6])   # two misses at threshold 0.5 ...
    quality = np.array([0.0, 0.1, 1.0, 1.0, 1.0, 1.0])  # ... on the two worst-quality pairs
    rng = np.random.default_rng(0)
    fnmr = erc_curve(gen, quality, 0.5, [0.0, 1 / 6, 2 / 6], rng)
    assert fnmr == pytest.approx([2 / 6, 1 / 5, 0.0])


def test_streamed_impostor_threshold_equals_the_full_one():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.repeat(np.arange(100), 3)
    t, n_imp = impostor_threshold(v, labels, 1e-2, block=37)
    full = all_pairs_scores(v, [str(x) for x in labels])
    assert n_imp == full.impostor.size
    assert t == pytest.approx(threshold_at_fmr(full.impostor, 1e-2), abs=1e-6)
    pairs, scores = genuine_pairs(v, labels)
    assert len(pairs) == 300 and np.allclose(np.sort(scores), full.genuine, atol=1e-6)


def test_erc_command_on_a_small_folder(lfw_dir, tmp_path):
    from click.testing import CliRunner

    from matcher.cli import main

    people = sorted(p for p in (lfw_dir / "images").iterdir() if len(list(p.iterdir())) >= 3)
    for p in people[:12]:
        shutil.copytree(p, tmp_path / "data" / p.name)
    for p in sorted((lfw_dir / "images").iterdir())[:40]:  # impostors enough for FMR 1e-2
        if not (tmp_path / "data" / p.name).exists():
            shutil.copytree(p, tmp_path / "data" / p.name)
    r = CliRunner().invoke(main, ["erc", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                                  "--fmr", "0.01", "--threads", "1"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "out" / "erc.json").read_text())
    assert rep["genuine_comparisons"] > 20 and rep["fnmr"]["random"][0] == rep["fnmr"]["unified"][0]
    assert (tmp_path / "out" / "erc.png").read_bytes()[:4] == b"\x89PNG"
