#!/usr/bin/env python3
"""Soak test: many threads verify / identify / enrol / remove against one Engine and Gallery.

    python scripts/soak.py [--duration 60] [--threads 8] [--rss-bound-mb 64] [--synthetic]
                           [--json out.json]

Templates are of real faces (lfw-dev via matcher.datasets.default_lfw_dir, one image per
person) when present, else synthetic unit vectors; the image path (detect + embed + identify)
uses an LFW JPEG or scikit-image's astronaut. Each thread owns a disjoint set of subject ids for
its enrolments and removals, so the expected final gallery is the replay, per thread in program
order, of the operations the gallery accepted -- whatever the interleaving. Reported: operations
per second, p50 / p99 latency per kind, RSS growth after warm-up (bound --rss-bound-mb), and the
final consistency check. Exit status 0 when consistent, no unexpected error and RSS within bound.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import matcher
from matcher.datasets import default_lfw_dir
from matcher.errors import MatcherError
from matcher.gallery import MAX_TEMPLATES_PER_SUBJECT, Gallery
from matcher.types import Template


def rss_bytes() -> int:
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return 0


def make_pool(eng: Any, n: int, synthetic: bool, seed: int) -> tuple[list[Template], list[bytes], str]:
    """(templates, encoded images for the image path, description)."""
    lfw = None if synthetic else default_lfw_dir()
    if lfw is not None:
        people = sorted(p for p in (Path(lfw) / "images").iterdir() if p.is_dir())
        rng = random.Random(seed)
        rng.shuffle(people)
        paths = [sorted(p.glob("*.jpg"))[0] for p in people[:n]]
        res = eng.templates([str(p) for p in paths], on_error="return")
        tpls = [t for t in res if isinstance(t, Template)]
        images = [p.read_bytes() for p in paths[:16]]
        return tpls, images, f"lfw-dev ({len(tpls)} people, one image each)"
    r = np.random.default_rng(seed)
    v = r.standard_normal((n, eng.recognizer.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    tpls = [Template(x, model=eng.model, model_hash=eng.model_hash) for x in v]
    import cv2
    from skimage import data as skdata
    face = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
    images = [cv2.imencode(".jpg", face)[1].tobytes()]
    return tpls, images, f"synthetic unit vectors ({n}) + scikit-image astronaut"


def run(duration: float = 60.0, threads: int = 8, *, synthetic: bool = False, pool_size: int = 400,
        seed: int = 0, rss_bound_mb: float = 64.0, engine: Any = None,
        image_every: int = 50, log=print) -> dict[str, Any]:
    eng = engine or matcher.Engine()
    tpls, images, source = make_pool(eng, pool_size, synthetic, seed)
    n = len(tpls)
    gal = Gallery(eng)
    # Subjects S<thread>-<k>; thread t owns the ids with k % threads == t. Half start enrolled.
    ids = [f"S{i % threads}-{i:05d}" for i in range(n)]
    owner = {sid: i % threads for i, sid in enumerate(ids)}
    expected: dict[str, list[int]] = {}
    initial = list(range(0, n, 2))
    gal.enroll_many([ids[i] for i in initial], [tpls[i] for i in initial])
    for i in initial:
        expected[ids[i]] = [i]
    per_thread_expected = [{} for _ in range(threads)]
    for sid, v in expected.items():
        per_thread_expected[owner[sid]][sid] = list(v)

    lat: dict[str, list[float]] = defaultdict(list)
    lat_lock = threading.Lock()
    errors: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    stop = threading.Event()
    start_barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        rng = random.Random(f"{seed}/{t}")
        mine = [sid for sid in ids if owner[sid] == t]
        model = per_thread_expected[t]  # this thread's replay of accepted operations
        local: dict[str, list[float]] = defaultdict(list)
        local_counts: dict[str, int] = defaultdict(int)
        start_barrier.wait()
        i = 0
        while not stop.is_set():
            i += 1
            r = rng.random()
            a = rng.randrange(n)
            t0 = time.perf_counter()
            try:
                if i % image_every == 0:
                    kind = "identify_image"
                    gal.identify(images[rng.randrange(len(images))], k=5, fpir=None, threshold=0.5)
                elif r < 0.40:
                    kind = "verify"
                    b = a if rng.random() < 0.3 else rng.randrange(n)
                    d = eng.verify(tpls[a], tpls[b], fmr=1e-3)
                    if a == b and not d.match:
                        raise AssertionError("a template does not match itself")
                elif r < 0.80:
                    kind = "identify"
                    res = gal.identify(tpls[a], k=5, fpir=None, threshold=0.5)
                    for c in res.candidates:
                        if not np.isfinite(c.score):
                            raise AssertionError(f"non-finite score {c.score}")
                elif r < 0.90:
                    kind = "enroll"
                    sid = rng.choice(mine)
                    have = model.get(sid, [])
                    try:
                        gal.enroll(sid, tpls[a])
                        accepted = True
                    except MatcherError:
                        accepted = False
                    if accepted != (len(have) < MAX_TEMPLATES_PER_SUBJECT):
                        raise AssertionError(f"enroll of {sid} accepted={accepted} with "
                                             f"{len(have)} templates")
                    if accepted:
                        model[sid] = have + [a]
                else:
                    kind = "remove"
                    sid = rng.choice(mine)
                    removed = gal.remove(sid)
                    if removed != (sid in model):
                        raise AssertionError(f"remove({sid}) = {removed}, expected {sid in model}")
                    model.pop(sid, None)
            except MatcherError as e:
                if kind in ("identify_image",):
                    kind = kind + "_error"
                else:
                    errors.append(f"{kind}: {type(e).__name__}: {e}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"{kind}: {type(e).__name__}: {e}")
            local[kind].append(time.perf_counter() - t0)
            local_counts[kind] += 1
        with lat_lock:
            for k, v in local.items():
                lat[k].extend(v)
            for k, v in local_counts.items():
                counts[k] += v

    ths = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for th in ths:
        th.start()
    rss_samples: list[tuple[float, int]] = []
    start_barrier.wait()
    t_start = time.perf_counter()
    warmup = min(5.0, duration * 0.2)
    rss_base = None
    while True:
        now = time.perf_counter() - t_start
        rss_samples.append((now, rss_bytes()))
        if rss_base is None and now >= warmup:
            rss_base = rss_samples[-1][1]
        if now >= duration:
            break
        time.sleep(min(0.5, max(0.0, duration - now)))
    stop.set()
    for th in ths:
        th.join()
    elapsed = time.perf_counter() - t_start
    rss_end = rss_bytes()
    rss_base = rss_base or rss_samples[0][1]

    # Consistency: the gallery equals the replay of the accepted operations.
    want: dict[str, list[int]] = {}
    for m in per_thread_expected:
        want.update(m)
    problems = []
    got_ids = set(gal.subject_ids())
    if got_ids != set(want):
        problems.append(f"subjects differ: {len(got_ids - set(want))} unexpected, "
                        f"{len(set(want) - got_ids)} missing")
    pool = np.stack([t.vector for t in tpls])
    for sid in sorted(got_ids & set(want)):
        tids = np.asarray(gal.subject(sid).template_ids, dtype=np.int64)
        vecs = gal._index.vectors_of(tids)
        rows = [int(np.argmax(pool @ v)) for v in vecs]
        exact = all(np.allclose(v, pool[r], atol=1e-6) for v, r in zip(vecs, rows))
        if sorted(rows) != sorted(want[sid]) or not exact:
            problems.append(f"{sid}: templates {sorted(rows)} != expected {sorted(want[sid])}")
    if gal.template_count != sum(len(v) for v in want.values()):
        problems.append(f"template count {gal.template_count} != "
                        f"{sum(len(v) for v in want.values())}")

    def pct(v: list[float], q: float) -> float:
        return float(np.percentile(np.asarray(v) * 1000.0, q)) if v else float("nan")

    total = sum(counts.values())
    growth_mb = (rss_end - rss_base) / 1e6
    report = {
        "source": source, "threads": threads, "duration_s": round(elapsed, 1),
        "operations": total, "throughput_per_s": round(total / elapsed, 1),
        "by_kind": {k: {"count": counts[k], "per_s": round(counts[k] / elapsed, 1),
                        "p50_ms": round(pct(lat[k], 50), 3), "p99_ms": round(pct(lat[k], 99), 3)}
                    for k in sorted(counts)},
        "rss_mb": {"start": round(rss_samples[0][1] / 1e6, 1),
                   "after_warmup": round(rss_base / 1e6, 1), "end": round(rss_end / 1e6, 1),
                   "growth_after_warmup": round(growth_mb, 1), "bound": rss_bound_mb,
                   "within_bound": growth_mb <= rss_bound_mb},
        "final_subjects": len(got_ids), "final_templates": gal.template_count,
        "consistent": not problems, "consistency_problems": problems[:10],
        "unexpected_errors": len(errors), "error_samples": errors[:10],
    }
    report["ok"] = report["consistent"] and not errors and report["rss_mb"]["within_bound"]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--pool", type=int, default=400, help="templates in the pool (people)")
    p.add_argument("--synthetic", action="store_true", help="synthetic templates, not lfw-dev")
    p.add_argument("--rss-bound-mb", type=float, default=64.0,
                   help="allowed RSS growth after warm-up (default 64 MB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report here")
    a = p.parse_args(argv)
    rep = run(a.duration, a.threads, synthetic=a.synthetic, pool_size=a.pool, seed=a.seed,
              rss_bound_mb=a.rss_bound_mb)
    print(json.dumps(rep, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
