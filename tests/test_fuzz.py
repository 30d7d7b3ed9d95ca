"""Short fuzzing run of every target in fuzz/fuzz_targets.py (a few hundred inputs each).

The full run (10^5 inputs per target, crash / hang isolation in worker processes) is
``python fuzz/fuzz_targets.py``; a failure here is reproduced there with
``--target T --seed 20240611 --start I --count 1``.
"""

from __future__ import annotations

import pytest
from repo_scripts import load_script

pytest.importorskip("skimage.data", reason="the image and DG2 seeds use scikit-image's astronaut")

fuzz = load_script("fuzz/fuzz_targets.py", "matcher_fuzz_targets")

SEED = 20240611
COUNT = 250


@pytest.mark.parametrize("target", fuzz.target_names())
def test_fuzz_target(target: str) -> None:
    import warnings

    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(COUNT):
            problem = fuzz.run_one(target, SEED, i)
            if problem:
                failures.append((i, problem))
    assert not failures, f"{len(failures)} failing inputs, first: {failures[:3]}"


def test_mutations_reach_past_integrity_checks() -> None:
    """The structure-aware mutations must produce inputs that parse, not only checksum errors."""
    from matcher.gallery import Gallery
    from matcher.types import Template

    ok = 0
    for i in range(100):
        rng, _ = fuzz.input_rng(SEED, "gallery", i)
        try:
            Gallery.from_bytes(fuzz._gallery_bytes(rng, False))
            ok += 1
        except Exception:  # noqa: BLE001
            pass
    assert ok >= 5
    s = fuzz.seeds()
    assert all(isinstance(Template.from_bytes(b), Template) for b in s.template_bytes)
