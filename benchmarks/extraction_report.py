"""Per-face extraction (detect + align + embed) side by side with OpenCV, same frames, same threads.

    python benchmarks/extraction_report.py [--faces 64] [--repeat 3]

Prints medians, p99s and ratios for 1 and 2 threads, and batch throughput on 2 threads. Both
pipelines start from decoded BGR frames (decoding is identical work for both) and run the same
prepared model files; they alternate image by image so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import OpenCVPipeline, face_images, frames, summary

import matcher


def interleaved(fa, fb, items, repeat):
    for it in items[:3]:
        fa(it), fb(it)
    ta, tb = [], []
    for _ in range(repeat):
        for it in items:
            t = time.perf_counter(); fa(it); ta.append(time.perf_counter() - t)
            t = time.perf_counter(); fb(it); tb.append(time.perf_counter() - t)
    return np.array(ta), np.array(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    imgs = frames(face_images(args.faces))
    report = {}
    for threads in (1, 2):
        eng = matcher.Engine(backend=args.backend, precision=args.precision, threads=threads)
        cv = OpenCVPipeline(threads)
        ours, peer = interleaved(eng.template, cv.template, imgs, args.repeat)
        ratio = np.median(peer) / np.median(ours)
        print(f"{threads} thread(s)  matcher [{eng.backend}/{eng.precision}]: {summary(ours)}")
        print(f"{threads} thread(s)  OpenCV YN+SF              : {summary(peer)}")
        print(f"{threads} thread(s)  speed-up (OpenCV median / matcher median): {ratio:.2f}x")
        report[f"{threads}t"] = {"matcher_ms": 1e3 * float(np.median(ours)),
                                 "matcher_p99_ms": 1e3 * float(np.percentile(ours, 99)),
                                 "opencv_ms": 1e3 * float(np.median(peer)),
                                 "opencv_p99_ms": 1e3 * float(np.percentile(peer, 99)),
                                 "speedup": float(ratio)}
    # Batch throughput on 2 cores: matcher's batched templates() vs OpenCV's per-face loop.
    eng = matcher.Engine(backend=args.backend, precision=args.precision, threads=2)
    cv = OpenCVPipeline(2)
    eng.templates(imgs[:8]), [cv.template(f) for f in imgs[:8]]
    best_ours = best_cv = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter(); eng.templates(imgs); best_ours = min(best_ours, time.perf_counter() - t)
        t = time.perf_counter(); [cv.template(f) for f in imgs]; best_cv = min(best_cv, time.perf_counter() - t)
    print(f"batch of {len(imgs)} on 2 threads: matcher {len(imgs) / best_ours:.1f} faces/s, "
          f"OpenCV {len(imgs) / best_cv:.1f} faces/s, ratio {best_cv / best_ours:.2f}x")
    report["batch_2t"] = {"matcher_fps": len(imgs) / best_ours, "opencv_fps": len(imgs) / best_cv,
                          "ratio": best_cv / best_ours}
    report["engine"] = eng.describe()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
