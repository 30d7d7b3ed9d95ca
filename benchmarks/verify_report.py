"""1:1 verification latency, side by side.

    python benchmarks/verify_report.py

(1) ``Engine.verify(template, template)`` through the public API vs a bare numpy dot product of
the same two vectors (``np.dot(a, b)``), timed with timeit, interleaved, 7 repeats each.
(2) The end-to-end contactless transaction with 1 inference thread: JPEG bytes of a live capture
plus the sealed QR text of the enrolled template -> Decision (decode, detect, align, embed,
unseal, compare), median and p99 over real faces.
"""

from __future__ import annotations

import timeit
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
from common import face_images, frames, summary, timings

import matcher


def main() -> None:
    eng = matcher.Engine(threads=1)
    rng = np.random.default_rng(0)
    a, b = (matcher.Template(v / np.linalg.norm(v), eng.model, eng.model_hash)
            for v in rng.normal(size=(2, 128)))
    va, vb = a.vector, b.vector
    ours, peer = [], []
    n = 20000
    for _ in range(7):
        ours.append(timeit.timeit(lambda: eng.verify(a, b, fmr=1e-4), number=n) / n)
        peer.append(timeit.timeit(lambda: np.dot(va, vb), number=n) / n)
    mo, mp = np.median(ours), np.median(peer)
    print(f"verify(template, template): median {mo * 1e6:.2f} us; numpy dot: {mp * 1e6:.2f} us; "
          f"ratio {mo / mp:.2f}x")

    imgs = frames(face_images(32))
    key = bytes(range(32))
    until = datetime.now(timezone.utc) + timedelta(days=30)
    # Each traveller's "card": a sealed template of a slightly different capture (resized frame).
    cases = []
    for f in imgs:
        enrol = cv2.resize(f, (f.shape[1] * 9 // 10, f.shape[0] * 9 // 10))
        qr = matcher.seal_text(eng.template(enrol), key, expires_at=until, issuer="BENCH")
        cases.append((cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes(), qr))

    def transaction(case):
        jpeg, qr = case
        return eng.verify(jpeg, matcher.unseal_text(qr, key), fmr=1e-4)

    ts = timings(transaction, cases, repeat=3)
    matches = sum(transaction(c).match for c in cases)
    print(f"contactless transaction (JPEG + sealed QR -> Decision), 1 thread: {summary(ts)}; "
          f"{matches}/{len(cases)} matched; engine {eng.backend}/{eng.precision}")


if __name__ == "__main__":
    main()
