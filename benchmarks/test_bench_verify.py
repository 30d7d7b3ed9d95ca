"""pytest-benchmark: ``Engine.verify`` on two templates vs a bare numpy dot of their vectors.

    pytest benchmarks/test_bench_verify.py

The two rows share the group "verify-1:1"; their median ratio is the API's overhead
(benchmarks/verify_report.py prints it directly, plus the end-to-end contactless transaction).
"""

from __future__ import annotations

import numpy as np
import pytest

import matcher


@pytest.fixture(scope="module")
def pair():
    eng = matcher.Engine(threads=1)
    rng = np.random.default_rng(0)
    a, b = (matcher.Template(v / np.linalg.norm(v), eng.model, eng.model_hash)
            for v in rng.normal(size=(2, 128)))
    return eng, a, b


@pytest.mark.benchmark(group="verify-1:1")
def test_engine_verify(benchmark, pair):
    eng, a, b = pair
    d = benchmark(eng.verify, a, b, fmr=1e-4)
    assert d.score == pytest.approx(float(a.vector @ b.vector), abs=1e-6)


@pytest.mark.benchmark(group="verify-1:1")
def test_numpy_dot(benchmark, pair):
    _, a, b = pair
    benchmark(np.dot, a.vector, b.vector)
