"""The thread budget (matcher.threads): plans per mode, and that configure() takes effect."""

from __future__ import annotations

import pytest

from matcher import threads as tb
from matcher.errors import InputError


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(tb.ENV_TOTAL, raising=False)
    monkeypatch.delenv(tb.ENV_MODE, raising=False)
    tb.reset()
    yield
    tb.reset()


def test_plans_of_the_two_modes():
    lat = tb.plan(4, "latency")
    assert (lat.inference, lat.streams, lat.workers, lat.faiss, lat.blas) == (4, 1, 1, 1, 1)
    thr = tb.plan(4, "throughput")
    assert (thr.inference, thr.streams, thr.workers, thr.faiss, thr.blas) == (4, 4, 4, 1, 1)
    from matcher.backends import available_cores

    assert tb.plan().total == available_cores() and tb.plan().mode == "latency"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_totals_are_refused(bad):
    with pytest.raises(InputError):
        tb.plan(bad)


def test_bad_mode_and_env_are_refused(monkeypatch):
    with pytest.raises(InputError):
        tb.plan(2, "fastest")
    monkeypatch.setenv(tb.ENV_TOTAL, "lots")
    with pytest.raises(InputError):
        tb.plan()


def test_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv(tb.ENV_TOTAL, "3")
    monkeypatch.setenv(tb.ENV_MODE, "throughput")
    b = tb.plan()
    assert (b.total, b.mode, b.inference, b.streams, b.workers) == (3, "throughput", 3, 3, 3)
    assert tb.current() == b  # not configured: the environment's plan, not applied
    assert tb.inference_threads() == 3  # ...until an Engine asks: then applied
    assert tb.current().applied


def test_configure_caps_blas_and_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    faiss = pytest.importorskip("faiss")
    import numpy as np  # noqa: F401 - loads numpy's BLAS

    b = tb.configure(total=2, mode="latency")
    assert {"blas", "openmp", "faiss"} <= set(b.applied)
    info = threadpoolctl.threadpool_info()
    blas = [p["num_threads"] for p in info if p["user_api"] == "blas"]
    omp = [p["num_threads"] for p in info if p["user_api"] == "openmp"]
    assert blas and all(n == 1 for n in blas)
    assert all(n == 1 for n in omp)
    assert faiss.omp_get_max_threads() == 1
    assert all(p["num_threads"] == 1 for p in tb.limits_report() if p["user_api"] == "blas")


def test_budget_context_restores_the_library_defaults():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    before = blas()
    with tb.budget(2, "throughput") as b:
        assert b.mode == "throughput" and tb.current() is b
        assert all(n == 1 for n in blas())
    assert blas() == before
    assert tb.current().applied == ()


def test_engine_takes_its_threads_from_the_budget():
    import matcher

    with tb.budget(1, "latency"):
        eng = matcher.Engine()
        d = eng.describe()
        assert d["threads"] == 1 == eng.detector.runner.threads == eng.recognizer.runner.threads
        assert d["thread_budget"]["mode"] == "latency" and d["thread_budget"]["total"] == 1
    with tb.budget(2, "throughput"):
        eng = matcher.Engine()
        d = eng.describe()
        # throughput: the threads in as many streams, so 2 gate threads run side by side
        assert (d["threads"], d["streams"]) == (2, 2)
        assert d["thread_budget"]["workers"] == 2
        if eng.recognizer.runner.backend == "openvino":
            compiled, _ = eng.recognizer.runner._pool((1, 3, 112, 112))
            assert int(compiled.get_property("NUM_STREAMS")) == 2
        if eng.detector.runner.backend == "onnxruntime":
            assert eng.detector.runner.threads == 1  # each concurrent call's share
    with tb.budget(2, "latency"):
        assert matcher.Engine().describe()["threads"] == 2
        assert matcher.Engine(threads=1).threads == 1  # an explicit count wins


def test_streams_are_checked():
    import matcher

    with pytest.raises(InputError, match="streams"):
        matcher.Engine(threads=1, streams=2)
    with pytest.raises(InputError, match="streams"):
        matcher.Engine(threads=2, streams=0)
    eng = matcher.Engine(threads=2, streams=2)
    assert eng.describe()["streams"] == 2
