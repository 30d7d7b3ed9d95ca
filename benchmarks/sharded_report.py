"""Sharded identify on Ray vs one in-process Gallery, at 10^6 templates: fan-out/merge overhead.

    python benchmarks/sharded_report.py                      # 10^6 templates, 2 shards
    python benchmarks/sharded_report.py --n 200000 --shards 1 2 4 --probes 100

Data: ``--n`` random 128-d unit vectors, one subject each (synthetic; the cost of an exact scan
does not depend on the faces), and ``--probes`` probes that are noisy copies of enrolled vectors
(cosine ~0.7 to their mate). Both contenders hold the same data with exact (``kind="flat"``)
indexes and 1 FAISS thread per search:
- local: ``Gallery.identify(probe, k=5, threshold=t)`` in this process;
- sharded: ``ShardedGallery`` with S shard actors (1 CPU each) on a local Ray cluster of this
  machine's cores; the probe is sent to every shard, each scans its part, the driver merges.
Single-probe calls are interleaved (local, sharded, local, ...). Also a batch of 32 probes per
call (``identify_many``), per probe. Every sharded answer is checked equal to the local one.
Prints median and p99 per call and the ratio sharded / local.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

# The calibrated SFace pipeline's id and hash (models/ card): only bookkeeping here.
MODEL, HASH = "sface-2021dec", "04051a3a339f0527"


def stats(ts: list[float]) -> str:
    a = np.array(ts) * 1e3
    return f"median {np.median(a):8.3f} ms  p99 {np.percentile(a, 99):8.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, nargs="+", default=[2])
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    os.chdir(tempfile.mkdtemp(prefix="matcher-sharded-"))  # see matcher.distributed.connect
    import ray

    from matcher.backends import available_cores
    from matcher.distributed import ShardedGallery
    from matcher.gallery import Gallery

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((args.n, 128), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"S{i:08d}" for i in range(args.n)]
    mates = rng.choice(args.n, args.probes, replace=False)
    noise = rng.standard_normal((args.probes, 128), dtype=np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    probes = vecs[mates] + noise
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    threshold = 0.5

    t = time.perf_counter()
    local = Gallery(MODEL, HASH, kind="flat", threads=1)
    local.enroll_many(ids, vecs)
    print(f"local gallery: {args.n} templates enrolled in {time.perf_counter() - t:.1f} s")
    ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False)
    try:
        for s in args.shards:
            t = time.perf_counter()
            sg = ShardedGallery(MODEL, HASH, shards=s, kind="flat", threads=1,
                                actor_options={"num_cpus": 1} if s <= available_cores() else
                                {"num_cpus": 0})
            step = 100_000
            for i in range(0, args.n, step):
                sg.enroll_many(ids[i:i + step], vecs[i:i + step])
            print(f"\n{s} shard(s): enrolled in {time.perf_counter() - t:.1f} s "
                  f"({sg.template_count} templates)")
            for p in probes[:5]:  # warm-up
                sg.identify(p, 5, threshold=threshold)
                local.identify(p, 5, threshold=threshold)
            tl, ts, equal = [], [], 0
            for p in probes:
                t = time.perf_counter()
                a = local.identify(p, 5, threshold=threshold)
                tl.append(time.perf_counter() - t)
                t = time.perf_counter()
                b = sg.identify(p, 5, threshold=threshold)
                ts.append(time.perf_counter() - t)
                equal += [(c.subject_id, c.score) for c in a.candidates] == \
                    [(c.subject_id, c.score) for c in b.candidates] and a.decision == b.decision
            print(f"  identify, 1 probe   local   {stats(tl)}")
            print(f"  identify, 1 probe   sharded {stats(ts)}   "
                  f"sharded/local {np.median(ts) / np.median(tl):.2f}x (median), "
                  f"{np.percentile(ts, 99) / np.percentile(tl, 99):.2f}x (p99)")
            bl, bs = [], []
            for i in range(0, args.probes - args.batch + 1, args.batch):
                q = probes[i:i + args.batch]
                t = time.perf_counter()
                local.identify_many(q, 5, threshold=threshold)
                bl.append((time.perf_counter() - t) / len(q))
                t = time.perf_counter()
                sg.identify_many(q, 5, threshold=threshold)
                bs.append((time.perf_counter() - t) / len(q))
            print(f"  identify_many x{args.batch}, per probe: local median "
                  f"{1e3 * np.median(bl):.3f} ms, sharded {1e3 * np.median(bs):.3f} ms "
                  f"({np.median(bs) / np.median(bl):.2f}x)")
            print(f"  answers equal to the local gallery: {equal}/{len(probes)}")
            del sg
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
