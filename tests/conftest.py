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


# ----------------------------------------------------------------- screening (also under Ray)
WATCHLIST_OTHERS = 30


@pytest.fixture(scope="session")
def others() -> np.ndarray:
    """30 random unit vectors: synthetic watchlist subjects."""
    v = np.random.default_rng(1).normal(size=(WATCHLIST_OTHERS, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def watchlist(tmp_path_factory, engine, astronaut_bgr, others) -> Path:
    """A watchlist file: the astronaut plus 30 random (synthetic) subjects."""
    import matcher

    g = matcher.Gallery(engine)
    g.enroll("astronaut", engine.template(astronaut_bgr))
    g.enroll_many([f"S{i:02d}" for i in range(WATCHLIST_OTHERS)], others)
    path = tmp_path_factory.mktemp("wl") / "watchlist.gallery"
    g.save(path)
    return path


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory, astronaut_bgr) -> Path:
    """Probe directory: a face, a group photo, corrupt / empty / non-image files, no face."""
    import cv2

    d = tmp_path_factory.mktemp("probes")
    (d / "group").mkdir()
    cv2.imwrite(str(d / "astronaut.jpg"), astronaut_bgr)
    cv2.imwrite(str(d / "group" / "two.png"), np.concatenate([astronaut_bgr, astronaut_bgr], 1))
    (d / "corrupt.jpg").write_bytes(cv2.imencode(".jpg", astronaut_bgr)[1].tobytes()[:300])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image at all\n")
    (d / "readme.txt").write_text("ignored: no image suffix\n")
    cv2.imwrite(str(d / "noise.png"), np.full((120, 160, 3), 90, np.uint8))
    return d


# ----------------------------------------------------------------- Ray (tests of matcher.distributed)
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs for one test module (skips without Ray). Ray puts the
    driver's working directory first on its workers' sys.path, so the driver runs from a temporary
    directory, not the repository (whose matcher/ has no compiled extension after a non-editable
    install; see matcher.distributed.connect)."""
    import os

    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'matcher[ray]'")
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray-driver"))
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
    finally:
        if started:
            ray.shutdown()
        os.chdir(cwd)


# Shared, noisy CI machines: a slow example is not a failure (hypothesis' default deadline is 200 ms).
from hypothesis import settings

settings.register_profile("matcher", deadline=None)
settings.load_profile("matcher")
