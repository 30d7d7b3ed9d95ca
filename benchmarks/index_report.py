"""Vector-index latency, memory and recall, side by side with the obvious peers.

    python benchmarks/index_report.py                 # everything (several minutes)
    python benchmarks/index_report.py --parts 0a      # only the small-gallery parts
    python benchmarks/index_report.py --n 200000      # a smaller (b)

(0) Native ``topk_ip`` (one query, 128-d) vs numpy ``G @ q`` + ``argmax`` (k=1) and
    + ``argpartition`` (k=5), N = 500 and N = 100k; timeit, interleaved, medians of 7 repeats.
(a) N = 500, Q = 1: ``VectorIndex("flat").search`` vs numpy ``G @ q`` + ``argmax``, each call
    timed alone over 2000 queries (median, p99, ratio).
(b) N = 10^6 random 128-d unit vectors plus 1000 planted mates (noisy copies with cosine
    0.6-0.8 to their query): build time and memory per template of kind "ivf" (and "hnsw" if its
    build is predicted to take < 10 min here), single-query search median / p99 with 1 OpenMP
    thread vs FAISS ``IndexFlatIP`` single-query search with 1 thread, and mate recall@1 vs the
    exact search. Builds use 2 threads (both cores); searches use 1.
"""

from __future__ import annotations

import argparse
import math
import time
import timeit

import faiss
import numpy as np

from matcher import _native
from matcher.index import VectorIndex

D = 128


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def unit_rows(rng, n: int, d: int = D, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for i in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - i), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[i: i + len(x)] = x
    return out


def med_us(fn, number: int) -> float:
    return 1e6 * float(np.median([timeit.timeit(fn, number=number) / number for _ in range(7)]))


def stats(ts) -> str:
    ts = np.asarray(ts)
    return f"median {1e6 * np.median(ts):9.1f} us  p99 {1e6 * np.percentile(ts, 99):9.1f} us"


def part0() -> None:
    print("(0) native topk_ip, one 128-d query, single thread (numpy's BLAS may use more)")
    rng = np.random.default_rng(0)
    for n in (500, 100_000):
        g = unit_rows(rng, n)
        q = unit_rows(rng, 1)
        qv = q[0]
        number = 2000 if n <= 1000 else 20
        # Interleave the contenders (one repeat of each in turn).
        fns = {
            "topk_ip k=1": lambda g=g, q=q: _native.topk_ip(g, q, 1),
            "numpy G@q + argmax": lambda g=g, qv=qv: np.argmax(g @ qv),
            "topk_ip k=5": lambda g=g, q=q: _native.topk_ip(g, q, 5),
            "numpy G@q + argpartition(5)": lambda g=g, qv=qv: np.argpartition(g @ qv, -5)[-5:],
        }
        res = {name: [] for name in fns}
        for _ in range(7):
            for name, fn in fns.items():
                res[name].append(timeit.timeit(fn, number=number) / number)
        m = {name: 1e6 * float(np.median(v)) for name, v in res.items()}
        print(f"  N={n:>6}: topk_ip k=1 {m['topk_ip k=1']:8.2f} us | numpy G@q+argmax "
              f"{m['numpy G@q + argmax']:8.2f} us | topk_ip k=5 {m['topk_ip k=5']:8.2f} us | "
              f"numpy G@q+argpartition {m['numpy G@q + argpartition(5)']:8.2f} us")


def part_a() -> None:
    print("(a) N=500, Q=1, 2000 queries: VectorIndex('flat').search(q, 1) vs numpy G@q + argmax")
    rng = np.random.default_rng(1)
    g = unit_rows(rng, 500)
    ids = np.arange(500, dtype=np.int64) * 3
    idx = VectorIndex(D, "flat")
    idx.add(ids, g)
    qs = unit_rows(rng, 2000)
    qrows = [qs[i: i + 1] for i in range(len(qs))]
    for q in qrows[:50]:  # warm-up
        idx.search(q, 1)
        np.argmax(g @ q[0])
    ours, peer = [], []
    pc = time.perf_counter
    for q in qrows:
        qv = q[0]
        t = pc()
        _, i = idx.search(q, 1)
        t1 = pc()
        j = np.argmax(g @ qv)
        t2 = pc()
        ours.append(t1 - t)
        peer.append(t2 - t1)
        assert i[0, 0] == ids[j]
    mo, mp = np.median(ours), np.median(peer)
    print(f"  VectorIndex flat: {stats(ours)}")
    print(f"  numpy G@q+argmax: {stats(peer)}")
    print(f"  ratio (ours / numpy): median {mo / mp:.2f}x, p99 "
          f"{np.percentile(ours, 99) / np.percentile(peer, 99):.2f}x")


def planted_set(n: int, n_mates: int = 1000, seed: int = 7):
    """n random unit vectors + n_mates mates (cosine U(0.6, 0.8) to their query), shuffled."""
    rng = np.random.default_rng(seed)
    base = unit_rows(rng, n)
    q = unit_rows(rng, n_mates)
    r = rng.standard_normal((n_mates, D)).astype(np.float32)
    r -= (r * q).sum(1, keepdims=True) * q
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    c = rng.uniform(0.6, 0.8, (n_mates, 1)).astype(np.float32)
    mates = c * q + np.sqrt(1 - c * c) * r
    mates /= np.linalg.norm(mates, axis=1, keepdims=True)
    g = np.concatenate([base, mates])
    del base
    perm = rng.permutation(len(g))
    g = g[perm]
    ids = np.arange(len(g), dtype=np.int64) + 10_000_000
    # Row of mate i is where perm == n + i.
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    mate_ids = ids[inv[n + np.arange(n_mates)]]
    return g, ids, q, mate_ids


def time_single(search, qs, repeat: int = 1):
    ts = []
    for _ in range(repeat):
        for i in range(len(qs)):
            t = time.perf_counter()
            search(qs[i: i + 1])
            ts.append(time.perf_counter() - t)
    return np.array(ts)


def part_b(n: int, kinds: list[str], force_hnsw: bool) -> None:
    print(f"(b) N={n} random 128-d unit vectors + 1000 planted mates (cosine 0.6-0.8)")
    t = time.perf_counter()
    g, ids, q, mate_ids = planted_set(n)
    total = len(g)
    print(f"  data: {total} x {D} float32 generated in {time.perf_counter() - t:.1f} s")

    # Exact peer: FAISS IndexFlatIP, single query, one OpenMP thread.
    flat = faiss.IndexFlatIP(D)
    flat.add(g)
    faiss.omp_set_num_threads(2)
    _, exact_i = flat.search(q, 1)
    exact_top = ids[exact_i[:, 0]]
    exact_recall = float((exact_top == mate_ids).mean())
    faiss.omp_set_num_threads(1)
    n_time = 200
    flat_ts = time_single(lambda x: flat.search(x, 1), q[:n_time])
    print(f"  FAISS IndexFlatIP, 1 thread, single query over {n_time}: {stats(flat_ts)}; "
          f"mate recall@1 {exact_recall:.4f}")

    want_hnsw = "hnsw" in kinds
    kinds = [k for k in kinds if k != "hnsw"]
    if want_hnsw and force_hnsw:
        kinds.append("hnsw")
    elif want_hnsw:
        # Predict the full HNSW build from a 10 % build (HNSW build is ~ N log N).
        sub = min(total, 100_000)
        probe = VectorIndex(D, "hnsw", threads=2)
        t = time.perf_counter()
        probe.add(ids[:sub], g[:sub])
        t_sub = time.perf_counter() - t
        del probe
        predicted = t_sub * (total / sub) * math.log(total) / math.log(sub)
        if predicted < 600:
            kinds.append("hnsw")
            print(f"  hnsw: {sub} built in {t_sub:.1f} s, full build predicted {predicted:.0f} s")
        else:
            print(f"  hnsw: SKIPPED: {sub} vectors took {t_sub:.1f} s to build, so the full "
                  f"build is predicted at {predicted:.0f} s (> 10 min) on this machine")

    for kind in kinds:
        rss0 = rss_mib()
        idx = VectorIndex(D, kind, threads=2)
        t = time.perf_counter()
        idx.add(ids, g)
        build = time.perf_counter() - t
        rss1 = rss_mib()
        idx.threads = 1
        mem = idx.memory_bytes()
        extra = ""
        if kind == "ivf":
            extra = f" (nlist {idx._nlist}, nprobe {idx.nprobe})"
        print(f"  {kind}{extra}: build {build:.1f} s (2 threads); memory_bytes "
              f"{mem / 2**20:.0f} MiB = {mem / total:.0f} B/template "
              f"(RSS +{rss1 - rss0:.0f} MiB = {(rss1 - rss0) * 2**20 / total:.0f} B/template; "
              f"raw vectors are {4 * D} B)")
        for _ in range(20):  # warm-up
            idx.search(q[:1], 1)
        ts = time_single(lambda x, idx=idx: idx.search(x, 1), q)
        s, got = idx.search(q, 1)
        recall = float((got[:, 0] == mate_ids).mean())
        agree = float((got[:, 0] == exact_top).mean())
        exact_scores = (q * g[np.searchsorted(ids, got[:, 0])]).sum(1)
        err = float(np.abs(s[:, 0] - exact_scores).max())
        fm = np.median(flat_ts)
        print(f"    search k=1, 1 thread, single query over {len(q)}: {stats(ts)}; "
              f"vs IndexFlatIP {fm / np.median(ts):.1f}x faster (median), "
              f"{np.percentile(flat_ts, 99) / np.percentile(ts, 99):.1f}x (p99)")
        print(f"    mate recall@1 {recall:.4f} (exact {exact_recall:.4f}); top-1 = exact top-1 "
              f"for {agree:.4f}; max |score - exact dot| {err:.2e}")
        if kind == "ivf":
            for nprobe in (16, 32, 64, 128, 256, 512):
                idx.nprobe = nprobe
                ts = time_single(lambda x, idx=idx: idx.search(x, 1), q[:300])
                _, got = idx.search(q, 1)
                print(f"    nprobe {nprobe:>3}: recall@1 {(got[:, 0] == mate_ids).mean():.4f}; "
                      f"{stats(ts)}")
            idx.nprobe = None
        del idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="0ab", help="any of 0, a, b (default 0ab)")
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size of part (b)")
    ap.add_argument("--kinds", default="ivf,hnsw", help="kinds of part (b) (default ivf,hnsw)")
    ap.add_argument("--force-hnsw", action="store_true",
                    help="build the full HNSW even if predicted to take > 10 min")
    args = ap.parse_args()
    print(f"simd {_native.simd_level()}; faiss {faiss.__version__}; numpy {np.__version__}")
    if "0" in args.parts:
        part0()
    if "a" in args.parts:
        part_a()
    if "b" in args.parts:
        part_b(args.n, [k for k in args.kinds.split(",") if k], args.force_hnsw)


if __name__ == "__main__":
    main()
