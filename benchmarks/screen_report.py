"""Batch watchlist screening throughput, side by side with the naive loop.

    python benchmarks/screen_report.py                  # 240 lfw-dev probes, 100-person watchlist
    python benchmarks/screen_report.py --probes 120 --workers 1 2

Data (same for every contender): a watchlist of the first image of ``--watchlist`` lfw-dev
people with >= 2 images; probes: ``--probes`` other lfw-dev images spread over the set (the
second image of listed people and images of everyone else), decoded from JPEG files each time.

Contenders:
- naive: one process, ``Engine.template(path)`` + ``Gallery.identify(t, k, fpir)`` per image
  (primary face only; NoFaceError caught), i.e. what a caller writes without ``screen``.
- screen(workers=1): in-process, same Engine (all cores' threads), every face of every probe,
  CSV output with an fsynced checkpoint per batch.
- screen(workers=N): N spawned processes, each Engine with cores // N threads; the time
  includes spawning the workers and loading their models (a few seconds), as a user sees it.
- with ``--ray``: screen(ray_address="local"): a Ray cluster started on this machine's cores,
  one worker actor per core with a 1-thread Engine; the time includes starting Ray and the
  actors (the driver is started from a temporary directory, see matcher.distributed.connect).

Reported: wall time, probes/s, faces/s (faces searched), hits, and the ratio of probes/s to the
naive loop. Requires ../shared/data/lfw-dev (or $MATCHER_LFW_DIR).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matcher
from matcher.backends import available_cores
from matcher.datasets import default_lfw_dir, labelled_images
from matcher.errors import MatcherError
from matcher.screening import screen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=240)
    ap.add_argument("--watchlist", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fpir", type=float, default=0.01)
    ap.add_argument("--ray", action="store_true", help="also screen on a local Ray cluster")
    args = ap.parse_args()

    root = default_lfw_dir()
    if root is None:
        raise SystemExit("lfw-dev not found: set MATCHER_LFW_DIR")
    people = labelled_images(root / "images")
    multi = sorted(p for p, f in people.items() if len(f) >= 2)
    listed = multi[:: max(1, len(multi) // args.watchlist)][: args.watchlist]
    listed_set = set(listed)
    rest = [f for p in sorted(people) for f in (people[p][1:] if p in listed_set else people[p])]
    probes = rest[:: max(1, len(rest) // args.probes)][: args.probes]

    eng = matcher.Engine()
    print(f"engine: {eng.describe()['backend']} {eng.precision}, {eng.threads} threads, "
          f"{available_cores()} cores")
    g = matcher.Gallery(eng)
    for p in listed:
        g.enroll(p, eng.template(people[p][0]))
    for p in probes[:8]:  # warm-up
        eng.face_templates(p)
    print(f"watchlist {len(g)} people; {len(probes)} probes; FPIR {args.fpir} "
          f"(threshold {g.threshold_for(args.fpir):.4f}); top-k 5\n")

    rows = []
    # naive loop
    t0 = time.perf_counter()
    faces = hits = 0
    for p in probes:
        try:
            t = eng.template(p)
        except MatcherError:
            continue
        faces += 1
        r = g.identify(t, 5, args.fpir)
        hits += sum(c.score >= r.threshold for c in r.candidates)
    naive = time.perf_counter() - t0
    rows.append(("naive loop (template + identify)", naive, faces, hits))

    with tempfile.TemporaryDirectory() as tmp:
        wl = Path(tmp) / "wl.gallery"
        g.save(wl)
        csv_path = Path(tmp) / "probes.csv"
        csv_path.write_text("path\n" + "".join(f"{p}\n" for p in probes))
        for w in args.workers:
            out = Path(tmp) / f"hits-{w}.csv"
            t0 = time.perf_counter()
            s = screen(wl, csv_path, out, fpir=args.fpir, top_k=5, workers=w,
                       batch_size=args.batch_size, engine=eng if w == 1 else None, audit=False)
            dt = time.perf_counter() - t0
            label = f"screen workers={w}" + (
                f" ({max(1, available_cores() // w)} threads each)" if w > 1 else " (in-process)")
            rows.append((label, dt, s.faces, s.hits))
        if args.ray:
            import os

            os.chdir(tmp)
            out = Path(tmp) / "hits-ray.csv"
            t0 = time.perf_counter()
            s = screen(wl, csv_path, out, fpir=args.fpir, top_k=5, batch_size=args.batch_size,
                       ray_address="local", audit=False)
            dt = time.perf_counter() - t0
            rows.append((f"screen --ray local ({available_cores()} x 1 thread)", dt, s.faces,
                         s.hits))
            same = out.read_bytes() == (Path(tmp) / f"hits-{args.workers[0]}.csv").read_bytes()
            print(f"Ray output identical to workers={args.workers[0]}: {same}")

    print(f"{'':40s} {'wall s':>7s} {'probes/s':>9s} {'faces/s':>8s} {'faces':>6s} "
          f"{'hits':>5s} {'vs naive':>8s}")
    for label, dt, nf, nh in rows:
        print(f"{label:40s} {dt:7.2f} {len(probes) / dt:9.1f} {nf / dt:8.1f} {nf:6d} {nh:5d} "
              f"{naive / dt:7.2f}x")


if __name__ == "__main__":
    main()
