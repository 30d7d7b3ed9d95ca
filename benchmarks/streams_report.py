"""Several gate threads on one shared Engine: inference streams vs one stream.

    python benchmarks/streams_report.py                 # K = cores threads, 48 faces each
    python benchmarks/streams_report.py --k 2 4 --per-thread 64

Each of K Python threads extracts templates (detect + align + embed) from decoded lfw-dev frames
(else scikit-image's astronaut) on **one shared Engine**, configured as
- ``threads=cores, streams=1``: the latency setting (every thread works on one request; an
  OpenVINO stream runs one request at a time, so concurrent callers queue), and
- ``threads=cores, streams=cores``: the throughput setting (``matcher.threads`` mode
  ``"throughput"``): that many requests side by side, one thread each.
Also K=1 (one request at a time) for both, to show what a single traveller pays for each.
Prints faces/s, median and p99 latency per configuration. Both run in this process on the same
frames, interleaved configuration by configuration.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from common import face_images, frames

import matcher
from matcher.backends import available_cores


def run(eng: matcher.Engine, imgs: list[np.ndarray], k: int, per_thread: int
        ) -> tuple[float, np.ndarray]:
    lat: list[float] = []
    barrier = threading.Barrier(k + 1)

    def work(i: int) -> None:
        eng.template(imgs[i % len(imgs)])  # warm-up: this thread's infer request
        barrier.wait()
        for j in range(per_thread):
            t = time.perf_counter()
            eng.template(imgs[(i * 7 + j) % len(imgs)])
            lat.append(time.perf_counter() - t)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(k)]
    for t in ths:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ths:
        t.join()
    return time.perf_counter() - t0, np.array(lat)


def main() -> None:
    cores = available_cores()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1, cores])
    ap.add_argument("--per-thread", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    args = ap.parse_args()

    imgs = frames(face_images(64))
    engines = {f"threads={cores}, streams=1": matcher.Engine(threads=cores, streams=1),
               f"threads={cores}, streams={cores}": matcher.Engine(threads=cores, streams=cores)}
    first = next(iter(engines.values())).describe()
    print(f"{cores} cores; recogniser {first['backend']} {first['precision']}, detector "
          f"{first['detector_backend']}; {len(imgs)} frames\n")
    results: dict[tuple[int, str], list] = {}
    for _ in range(args.rounds):
        for k in args.k:
            for label, eng in engines.items():
                wall, lat = run(eng, imgs, k, args.per_thread)
                r = results.setdefault((k, label), [0.0, []])
                r[0] += wall
                r[1].append(lat)
    print(f"{'K':>3s}  {'engine':28s} {'faces/s':>8s} {'median ms':>10s} {'p99 ms':>8s}")
    for (k, label), (wall, lats) in sorted(results.items()):
        lat = np.concatenate(lats)
        print(f"{k:3d}  {label:28s} {lat.size / wall:8.1f} {1e3 * np.median(lat):10.2f} "
              f"{1e3 * np.percentile(lat, 99):8.2f}")


if __name__ == "__main__":
    main()
