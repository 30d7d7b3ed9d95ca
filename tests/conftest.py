"""Shared fixtures. Tests needing the shared LFW split skip with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matcher.datasets import default_lfw_dir


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    root = default_lfw_dir()
    if root is None:  # relative to this checkout, whatever the working directory
        here = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"
        root = here if (here / "pairs.txt").is_file() else None
    if root is None:
        pytest.skip("LFW development split not found: set MATCHER_LFW_DIR or provide "
                    "../shared/data/lfw-dev (images/ + pairs.txt)")
    return root


@pytest.fixture(scope="session")
def engine():
    import matcher

    return matcher.Engine()


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real face that ships with scikit-image (a test dependency), as a BGR frame."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is needed for this face")
    return np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])


# Shared, noisy CI machines: a slow example is not a failure (hypothesis' default deadline is 200 ms).
from hypothesis import settings  # noqa: E402

settings.register_profile("matcher", deadline=None)
settings.load_profile("matcher")
