"""1:N identification through the public API, side by side with the bare alternatives.

    python benchmarks/gallery_report.py [--large 1000000]

(1) Flight-size gallery (N = 500 real lfw-dev faces, or synthetic unit vectors without lfw-dev):
    ``Gallery.identify(template, k=5, fpir=0.003)`` vs a bare numpy ``G @ q`` + ``argmax``,
    interleaved, median and p99 over 2,000 probes, ratio.
(2) Large gallery: lfw-dev mates (first image of every person with >= 2 images) inside synthetic
    unit-vector distractors up to ``--large`` templates. Enrolment throughput of ``enroll_many``
    (kind "ivf": IVF with SQ8 codes, trained on the way), memory per template, ``identify`` median/p99
    vs faiss ``IndexFlatIP`` single-query search (1 OpenMP thread) on the same vectors, and mate
    recall@1 relative to the exact search. Decisions use ``threshold=0.5`` here: FPIR at 10^6
    templates is beyond what the lfw-dev calibration resolves.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import summary

import matcher
from matcher.datasets import default_lfw_dir
from matcher.evaluation import templates_of
from matcher.gallery import Gallery


def lfw_mates(eng):
    root = default_lfw_dir()
    if root is None:
        return None
    people = {}
    for p in sorted((root / "images").glob("*/*.jpg")):
        people.setdefault(p.parent.name, []).append(p)
    multi = {n: fs[:2] for n, fs in people.items() if len(fs) >= 2}
    tpls, _ = templates_of(eng, [f for fs in multi.values() for f in fs])
    pairs = [(n, tpls[a], tpls[b]) for n, (a, b) in multi.items() if a in tpls and b in tpls]
    return pairs


def unit(rng, n, d=128):
    v = rng.standard_normal((n, d), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def flight(eng, pairs, rng) -> None:
    if pairs:
        enrol = pairs[:500]
        ids = [n for n, _, _ in enrol]
        vecs = np.stack([a.vector for _, a, _ in enrol])
        probes = [b for _, _, b in enrol]
    else:
        vecs = unit(rng, 500)
        ids = [f"P{i:03d}" for i in range(500)]
        probes = [matcher.Template(v, eng.model, eng.model_hash) for v in vecs]
    g = Gallery(eng)
    g.enroll_many(ids, vecs)
    probes = (probes * (2000 // len(probes) + 1))[:2000]
    ours, peer = [], []
    for t in probes[:50]:
        g.identify(t, 5, 0.003), int(np.argmax(vecs @ t.vector))
    for t in probes:
        s = time.perf_counter(); g.identify(t, 5, 0.003); ours.append(time.perf_counter() - s)
        v = t.vector
        s = time.perf_counter(); int(np.argmax(vecs @ v)); peer.append(time.perf_counter() - s)
    ours, peer = np.array(ours), np.array(peer)
    us = lambda a: f"median {1e6 * np.median(a):6.1f} us  p99 {1e6 * np.percentile(a, 99):6.1f} us"
    print(f"N=500  identify(k=5, fpir=0.003): {us(ours)}")
    print(f"N=500  numpy G @ q + argmax     : {us(peer)}")
    print(f"N=500  ratio (identify / numpy): {np.median(ours) / np.median(peer):.2f}x")


def large(eng, pairs, n_total: int, rng) -> None:
    import faiss

    mates = pairs or []
    n_syn = n_total - len(mates)
    vecs = unit(rng, n_syn)
    ids = [f"D{i:07d}" for i in range(n_syn)]
    if mates:
        vecs = np.concatenate([np.stack([a.vector for _, a, _ in mates]), vecs])
        ids = [n for n, _, _ in mates] + ids
    g = Gallery(eng, kind="ivf")  # "auto" stays exact up to 10^6; this measures the IVF path
    t0 = time.perf_counter()
    for s in range(0, len(ids), 100_000):
        g.enroll_many(ids[s:s + 100_000], vecs[s:s + 100_000])
    build = time.perf_counter() - t0
    info = g.info()
    print(f"N={len(ids)}  enroll_many: {build:.1f} s ({len(ids) / build:,.0f} templates/s), "
          f"index {info['index']}, {info['memory_bytes'] / len(ids):.0f} bytes/template "
          f"(dense float32 rows for exact re-scoring + index codes)")
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    faiss.omp_set_num_threads(1)
    if mates:
        probes = [(n, b) for n, _, b in mates][:300]
    else:
        probes = [(ids[i], matcher.Template(v, eng.model, eng.model_hash))
                  for i, v in enumerate(vecs[:300])]
    ours, peer, agree, mate_ours, mate_exact = [], [], 0, 0, 0
    for name, t in probes:
        s = time.perf_counter(); r = g.identify(t, 5, None, threshold=0.5)
        ours.append(time.perf_counter() - s)
        faiss.omp_set_num_threads(1)
        s = time.perf_counter(); _, I = flat.search(t.vector[None], 1)
        peer.append(time.perf_counter() - s)
        agree += r.candidates[0].subject_id == ids[int(I[0, 0])]
        mate_ours += r.candidates[0].subject_id == name
        mate_exact += ids[int(I[0, 0])] == name
    ours, peer = np.array(ours), np.array(peer)
    print(f"N={len(ids)}  identify (ivf index) : {summary(ours)}")
    print(f"N={len(ids)}  faiss IndexFlatIP     : {summary(peer)}")
    print(f"N={len(ids)}  ratio {np.median(ours) / np.median(peer):.3f}x; mate at rank 1: "
          f"{mate_ours}/{len(probes)} (exact search: {mate_exact}/{len(probes)}; ratio "
          f"{mate_ours / max(mate_exact, 1):.4f}); rank-1 equal to the exact search's for "
          f"{agree}/{len(probes)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=1_000_000)
    args = ap.parse_args()
    eng = matcher.Engine(threads=2)
    rng = np.random.default_rng(0)
    pairs = lfw_mates(eng)
    flight(eng, pairs, rng)
    if args.large:
        large(eng, pairs, args.large, rng)


if __name__ == "__main__":
    main()
