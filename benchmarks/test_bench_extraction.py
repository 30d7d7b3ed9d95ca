"""pytest-benchmark: per-face extraction, matcher vs OpenCV YuNet+SFace on the same frames.

    pytest benchmarks/test_bench_extraction.py --benchmark-group-by=param:threads

Compare the ``matcher`` and ``opencv`` rows within a thread group; the ratio of their medians is
the speed-up (benchmarks/extraction_report.py prints it directly, with p99s).
"""

from __future__ import annotations

import itertools

import pytest
from common import OpenCVPipeline, face_images, frames

import matcher

IMAGES = frames(face_images(32))


@pytest.mark.parametrize("threads", [1, 2])
def test_matcher(benchmark, threads):
    eng = matcher.Engine(threads=threads)
    it = itertools.cycle(IMAGES)
    benchmark.extra_info.update(eng.describe())
    benchmark.pedantic(lambda: eng.template(next(it)), rounds=len(IMAGES) * 2, warmup_rounds=3)


@pytest.mark.parametrize("threads", [1, 2])
def test_opencv(benchmark, threads):
    cv = OpenCVPipeline(threads)
    it = itertools.cycle(IMAGES)
    benchmark.pedantic(lambda: cv.template(next(it)), rounds=len(IMAGES) * 2, warmup_rounds=3)


@pytest.mark.parametrize("threads", [2])
def test_matcher_batch16(benchmark, threads):
    eng = matcher.Engine(threads=threads)
    benchmark.pedantic(lambda: eng.templates(IMAGES[:16]), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("threads", [2])
def test_opencv_loop16(benchmark, threads):
    cv = OpenCVPipeline(threads)
    benchmark.pedantic(lambda: [cv.template(f) for f in IMAGES[:16]], rounds=5, warmup_rounds=1)
