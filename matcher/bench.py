"""``matcher bench``: where a gate transaction's time goes, beside its obvious peers, in one run.

:func:`run` measures four things on this machine and writes ``report.md``, ``results.json`` and
PNG plots into an output folder:

(a) **stages** of a gate transaction (decode, detect, align, embed, unseal, compare) for matcher
    beside OpenCV ``FaceDetectorYN`` + ``FaceRecognizerSF`` on the same prepared model files
    (``cv2.imdecode`` for decoding, ``FaceRecognizerSF.match`` for comparing; unsealing has no
    OpenCV equivalent). Interleaved image by image so machine noise hits both alike.
(b) **end-to-end transactions**: 1:1 (JPEG bytes + sealed QR text -> Decision) and 1:N at a
    flight gallery of 500 templates (JPEG bytes -> Identification), p50, p95 and p99; the peer is
    the OpenCV pipeline (unsealing the same QR format for 1:1) plus a numpy ``G @ q`` search.
(c) **identify latency vs gallery size** (10^2 .. 10^6; without 10^6 if not ``large``) for
    ``Gallery.identify`` vs faiss ``IndexFlatIP`` (1 OpenMP thread) and numpy brute force
    (``G @ q`` + ``argpartition``), on unit vectors with planted mates; recall@1 of the gallery
    relative to exact search.
(d) **concurrency**: K gate threads (1, 2, 4, 8) each running the 1:1 transaction on one shared
    Engine: throughput and p99 vs K, against OpenCV with one detector / recogniser per thread
    (OpenCV's objects are not thread-safe) and ``cv2.setNumThreads`` set like the engine.

Threads follow :mod:`matcher.threads`: (a)-(c) run under the ``"latency"`` budget of ``total``
threads (inference = total, FAISS 1, BLAS 1), (d) under ``"throughput"`` (a shared Engine whose
``total`` threads run ``total`` requests side by side, one thread each) and, for comparison, the
latency engine (one stream) shared as well. OpenCV gets the same
thread count as the engine it stands beside. The budget in force before :func:`run` is restored
afterwards.

Faces: lfw-dev images spread over the set (``$MATCHER_LFW_DIR`` or ``../shared/data/lfw-dev``),
else scikit-image's astronaut repeated. ``quick=True`` uses small counts and no gallery of 10^5+
(for tests; the figures are then rough).
"""

from __future__ import annotations

import json
import math
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

#: Figures written by :func:`run` (inside ``out``).
REPORT = "report.md"
RESULTS = "results.json"
PLOTS = ("stages.png", "transactions.png", "gallery_scaling.png", "concurrency.png")
SECTIONS = ("## Environment", "## (a) Stages of a gate transaction",
            "## (b) End-to-end gate transactions", "## (c) Identify latency vs gallery size",
            "## (d) Concurrency: K gate threads on a shared Engine")

FLIGHT_SIZE = 500
KEY = bytes(range(32))


@dataclass
class BenchConfig:
    """What :func:`run` measures. ``threads``: the total thread budget (None: all cores)."""

    out: Path
    quick: bool = False
    large: bool = True                # include 10^6 (exact index: ~5 s to build, 2.7 GB peak)
    threads: int | None = None
    backend: str = "auto"
    precision: str = "auto"
    faces: int | None = None          # default 48 (quick: 6)
    repeat: int | None = None         # default 3 (quick: 1)
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    command: str = "matcher bench"
    extra: dict[str, Any] = field(default_factory=dict)

    def n_faces(self) -> int:
        return self.faces or (6 if self.quick else 48)

    def n_repeat(self) -> int:
        return self.repeat or (1 if self.quick else 3)

    def gallery_sizes(self) -> list[int]:
        if self.quick:
            return [100, 1000]
        sizes = [100, 1000, 10_000, 100_000]
        return sizes + [1_000_000] if self.large else sizes


# ---------------------------------------------------------------------------------------- helpers
def stats(ts) -> dict[str, float]:
    """Median (p50), p95, p99 and mean in milliseconds of per-call times in seconds."""
    a = np.asarray(ts, dtype=np.float64)
    return {"median_ms": 1e3 * float(np.median(a)), "p95_ms": 1e3 * float(np.percentile(a, 95)),
            "p99_ms": 1e3 * float(np.percentile(a, 99)), "mean_ms": 1e3 * float(a.mean()),
            "n": int(a.size)}


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector-unit flags that matter for inference (AVX2, AVX-512, bf16, AMX, VNNI)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                          "amx_tile", "avx_vnni")
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    import cv2
    import faiss

    out = {"numpy": np.__version__, "opencv": cv2.__version__, "faiss": faiss.__version__}
    try:
        import openvino

        out["openvino"] = openvino.get_version()
    except ImportError:
        pass
    import onnxruntime

    out["onnxruntime"] = onnxruntime.__version__
    return out


def gate_faces(n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` (name, BGR frame) pairs: lfw-dev files spread over the set, else the astronaut."""
    from matcher.datasets import default_lfw_dir
    from matcher.image import load_image

    root = default_lfw_dir()
    if root is not None:
        files = sorted((root / "images").glob("*/*.jpg"))
        picked = files[:: max(1, len(files) // n)][:n]
        return [(p.stem, load_image(p)) for p in picked]
    try:
        from skimage import data
    except ImportError:
        raise RuntimeError("no face images: provide lfw-dev ($MATCHER_LFW_DIR) or install "
                           "scikit-image") from None
    frame = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    return [(f"astronaut_{i}", frame) for i in range(n)]


def unit_rows(rng: np.random.Generator, n: int, d: int = 128) -> np.ndarray:
    v = rng.standard_normal((n, d), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def _jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _enrol_frame(frame: np.ndarray) -> np.ndarray:
    """A slightly different capture of the same face (90% size) for the enrolled reference."""
    import cv2

    h, w = frame.shape[:2]
    return cv2.resize(frame, (w * 9 // 10, h * 9 // 10), interpolation=cv2.INTER_AREA)


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, scores.shape[0])
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx])]
    return idx, scores[idx]


def interleaved(fns: list[Callable[[Any], Any]], items: list[Any], repeat: int,
                inner: int = 1, warmup: int = 2) -> list[np.ndarray]:
    """Per-call times (s) of each ``fn(item)``, alternating functions item by item. ``inner``
    calls are timed together and divided (for microsecond operations)."""
    for it in items[:warmup]:
        for fn in fns:
            fn(it)
    out: list[list[float]] = [[] for _ in fns]
    perf = time.perf_counter
    for _ in range(repeat):
        for it in items:
            for j, fn in enumerate(fns):
                t = perf()
                for _ in range(inner):
                    fn(it)
                out[j].append((perf() - t) / inner)
    return [np.array(o) for o in out]


class OpenCVPeer:
    """OpenCV ``FaceDetectorYN`` (input size = frame size) + ``FaceRecognizerSF`` on the same
    prepared model files as the Engine. Not thread-safe: one per thread."""

    def __init__(self) -> None:
        import cv2

        from matcher.models import prepare
        from matcher.models.cards import load_card

        self.cv2 = cv2
        det_card, rec_card = load_card("yunet-2023mar"), load_card("sface-2021dec")
        d = det_card.extra.get("defaults", {})
        self.det = cv2.FaceDetectorYN.create(
            str(prepare.prepared_path(det_card)), "", (320, 320),
            float(d.get("score_threshold", 0.6)), float(d.get("nms_iou", 0.3)), 5000)
        self.rec = cv2.FaceRecognizerSF.create(str(prepare.prepared_path(rec_card)), "")
        self._size: tuple[int, int] | None = None

    def decode(self, jpeg: bytes) -> np.ndarray:
        return self.cv2.imdecode(np.frombuffer(jpeg, np.uint8), self.cv2.IMREAD_COLOR)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        size = (frame.shape[1], frame.shape[0])
        if size != self._size:
            self.det.setInputSize(size)
            self._size = size
        _, faces = self.det.detect(frame)
        if faces is None:
            raise RuntimeError("OpenCV found no face")
        return faces

    def align(self, frame: np.ndarray, faces: np.ndarray) -> np.ndarray:
        return self.rec.alignCrop(frame, faces[0])

    def embed(self, crop: np.ndarray) -> np.ndarray:
        v = self.rec.feature(crop).ravel()
        return v / np.linalg.norm(v)

    def compare(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.rec.match(a, b, self.cv2.FaceRecognizerSF_FR_COSINE)

    def template(self, frame: np.ndarray) -> np.ndarray:
        return self.embed(self.align(frame, self.detect(frame)))


# ------------------------------------------------------------------------------------ sections
def bench_stages(eng, peer: OpenCVPeer, faces, repeat: int) -> dict[str, Any]:
    """(a) Per-stage times, matcher vs OpenCV, interleaved."""
    from matcher.engine import primary_face
    from matcher.image import load_image
    from matcher.sealing import seal_text, unseal_text

    until = datetime.now(timezone.utc) + timedelta(days=30)
    cases = []
    for _, frame in faces:
        jpeg = _jpeg(frame)
        fr = load_image(jpeg)
        mf = eng.detector.detect(fr)
        if not mf:
            continue
        face = primary_face(mf, fr.shape[1], fr.shape[0])
        batch = eng.recognizer.new_batch(1)
        eng.recognizer.align_into(fr, [face], batch, 0)
        tpl = eng._template(eng.recognizer.embed(batch)[0])
        ref = eng.template(_enrol_frame(frame))
        cf = peer.detect(peer.decode(jpeg))
        crop = peer.align(fr, cf)
        cv_vec = peer.rec.feature(crop)
        cv_ref = peer.rec.feature(peer.align(_enrol_frame(frame),
                                             peer.detect(_enrol_frame(frame))))
        cases.append({"jpeg": jpeg, "frame": fr, "face": face, "faces": mf, "batch": batch,
                      "tpl": tpl, "ref": ref, "qr": seal_text(ref, KEY, expires_at=until),
                      "cv_faces": cf, "crop": crop, "cv_vec": cv_vec, "cv_ref": cv_ref})
    if not cases:
        raise RuntimeError("no face found in any benchmark image")

    def m_align(c):
        f = primary_face(c["faces"], c["frame"].shape[1], c["frame"].shape[0])
        b = eng.recognizer.new_batch(1)
        eng.recognizer.align_into(c["frame"], [f], b, 0)

    stages = [
        ("decode", lambda c: load_image(c["jpeg"]), lambda c: peer.decode(c["jpeg"]), 1),
        ("detect", lambda c: eng.detector.detect(c["frame"]),
         lambda c: peer.detect(c["frame"]), 1),
        ("align", m_align, lambda c: peer.align(c["frame"], c["cv_faces"]), 1),
        ("embed", lambda c: eng.recognizer.embed(c["batch"]), lambda c: peer.embed(c["crop"]), 1),
        ("unseal", lambda c: unseal_text(c["qr"], KEY), None, 20),
        ("compare", lambda c: eng.verify(c["tpl"], c["ref"], fmr=1e-4),
         lambda c: peer.compare(c["cv_vec"], c["cv_ref"]), 500),
    ]
    rows = []
    for name, ours, theirs, inner in stages:
        fns = [ours] + ([theirs] if theirs is not None else [])
        ts = interleaved(fns, cases, repeat, inner=inner)
        rows.append({"stage": name, "matcher": stats(ts[0]),
                     "opencv": stats(ts[1]) if theirs is not None else None, "inner": inner})
    return {"faces": len(cases), "repeat": repeat, "rows": rows}


def _transaction_cases(eng, peer: OpenCVPeer, faces):
    """[(jpeg, matcher QR, OpenCV QR, matcher ref template, OpenCV ref vector)] per face."""
    from matcher.sealing import seal_text
    from matcher.types import Template

    until = datetime.now(timezone.utc) + timedelta(days=30)
    out = []
    for _, frame in faces:
        enrol = _enrol_frame(frame)
        try:
            ref = eng.template(enrol)
            cv_ref = peer.template(enrol)
        except Exception:  # noqa: BLE001, S112 - a face either pipeline misses on the smaller
            # enrolment frame is skipped for both, so both run the same cases
            continue
        cv_tpl = Template(cv_ref.astype(np.float32), eng.model, eng.model_hash)
        out.append({"jpeg": _jpeg(frame), "qr": seal_text(ref, KEY, expires_at=until),
                    "cv_qr": seal_text(cv_tpl, KEY, expires_at=until),
                    "ref": ref, "cv_ref": cv_ref})
    if not out:
        raise RuntimeError("no usable benchmark faces")
    return out


def one_to_one(eng, threshold: float):
    """The matcher 1:1 transaction: JPEG bytes + sealed QR text -> Decision."""
    from matcher.sealing import unseal_text

    def tx(case):
        return eng.verify(case["jpeg"], unseal_text(case["qr"], KEY), fmr=1e-4)
    return tx


def one_to_one_peer(peer: OpenCVPeer, threshold: float):
    """The peer's 1:1 transaction: cv2.imdecode + YN + SF + the same unsealing + cosine."""
    from matcher.sealing import unseal_text

    def tx(case):
        v = peer.template(peer.decode(case["jpeg"]))
        ref = unseal_text(case["cv_qr"], KEY).vector
        score = float(np.dot(v, ref))
        return score >= threshold
    return tx


def bench_transactions(eng, peer: OpenCVPeer, cases, repeat: int,
                       rng: np.random.Generator) -> dict[str, Any]:
    """(b) 1:1 and 1:N (flight gallery of 500) transactions end to end, matcher vs OpenCV."""
    from matcher.gallery import Gallery

    threshold = eng.operating_points[1e-4]
    ours, theirs = interleaved([one_to_one(eng, threshold), one_to_one_peer(peer, threshold)],
                               cases, repeat)
    m_match = sum(bool(one_to_one(eng, threshold)(c).match) for c in cases)
    c_match = sum(bool(one_to_one_peer(peer, threshold)(c)) for c in cases)
    res: dict[str, Any] = {"one_to_one": {"matcher": stats(ours), "opencv": stats(theirs),
                                          "fmr": 1e-4, "threshold": threshold,
                                          "matched": {"matcher": m_match, "opencv": c_match},
                                          "cases": len(cases)}}

    # 1:N: the travellers' references plus synthetic unit-vector distractors up to 500 templates.
    n_fill = max(0, FLIGHT_SIZE - len(cases))
    fill = unit_rows(rng, n_fill)
    ids = [f"TRAVELLER-{i:03d}" for i in range(len(cases))] + [f"PAX-{i:03d}" for i in range(n_fill)]
    g = Gallery(eng)
    g.enroll_many(ids, np.concatenate([np.stack([c["ref"].vector for c in cases]), fill]))
    cv_g = np.ascontiguousarray(np.concatenate([np.stack([c["cv_ref"] for c in cases]), fill]),
                                dtype=np.float32)
    fpir = 0.003
    t_n = g.threshold_for(fpir, len(ids))
    for i, c in enumerate(cases):
        c["index"] = i

    def ours_n(c):
        return g.identify(c["jpeg"], k=5, fpir=fpir)

    def peer_n(c):
        v = peer.template(peer.decode(c["jpeg"])).astype(np.float32)
        idx, sc = _topk(cv_g @ v, 5)
        return ids[int(idx[0])] if sc[0] >= t_n else None

    ours, theirs = interleaved([ours_n, peer_n], cases, repeat)
    m_ok = sum(ours_n(c).decision == ids[c["index"]] for c in cases)
    c_ok = sum(peer_n(c) == ids[c["index"]] for c in cases)
    res["one_to_n"] = {"matcher": stats(ours), "opencv": stats(theirs), "gallery": len(ids),
                       "fpir": fpir, "threshold": t_n,
                       "identified": {"matcher": m_ok, "opencv": c_ok}, "cases": len(cases)}
    return res


def bench_scaling(eng, sizes: list[int], probes: int, rng: np.random.Generator,
                  echo: Callable[[str], None]) -> dict[str, Any]:
    """(c) Gallery.identify vs faiss IndexFlatIP vs numpy brute force at each gallery size."""
    import faiss

    from matcher.gallery import Gallery
    from matcher.types import Template

    rows = []
    for n in sizes:
        vecs = unit_rows(rng, n)
        ids = [f"S{i:07d}" for i in range(n)]
        g = Gallery(eng.model, eng.model_hash, kind="auto", dim=vecs.shape[1])
        t0 = time.perf_counter()
        for s in range(0, n, 100_000):
            g.enroll_many(ids[s:s + 100_000], vecs[s:s + 100_000])
        build = time.perf_counter() - t0
        flat = faiss.IndexFlatIP(vecs.shape[1])
        flat.add(vecs)
        # Probes: a planted mate per probe (cosine ~0.7 to its row), like a genuine search.
        mates = rng.choice(n, size=min(probes, n), replace=False)
        q = vecs[mates] + 0.8 * unit_rows(rng, len(mates))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        tpls = [Template(row, eng.model, eng.model_hash) for row in q]

        def ours(t, g=g):
            return g.identify(t, 5, None, threshold=0.5)

        def fai(t, flat=flat):
            faiss.omp_set_num_threads(1)
            return flat.search(t.vector[None], 5)

        def npy(t, vecs=vecs):
            return _topk(vecs @ t.vector, 5)

        ts = interleaved([ours, fai, npy], tpls, 1)
        agree = sum(ours(t).candidates[0].subject_id == ids[int(fai(t)[1][0, 0])] for t in tpls)
        row = {"n": n, "kind_in_use": g._index.kind_in_use if g._index is not None else "flat",
               "build_s": build, "probes": len(tpls), "gallery": stats(ts[0]),
               "faiss_flat": stats(ts[1]), "numpy": stats(ts[2]),
               "recall_at_1_vs_exact": agree / len(tpls)}
        rows.append(row)
        echo(f"  N={n:>9,}: identify {row['gallery']['median_ms']:.3f} ms, faiss flat "
             f"{row['faiss_flat']['median_ms']:.3f} ms, numpy {row['numpy']['median_ms']:.3f} ms "
             f"({row['kind_in_use']}, built in {build:.1f} s)")
    return {"rows": rows}


def _run_threads(k: int, per_thread: int, make: Callable[[], Callable[[Any], Any]],
                 cases) -> tuple[float, np.ndarray]:
    """Wall time and per-transaction latencies of ``k`` threads, each running ``per_thread``
    transactions made by its own ``make()`` (called before the common start)."""
    barrier = threading.Barrier(k + 1)
    lat: list[list[float]] = [[] for _ in range(k)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            tx = make()
            tx(cases[i % len(cases)])  # warm-up (per-thread state, OpenVINO infer request)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()
            return
        barrier.wait()
        perf = time.perf_counter
        for j in range(per_thread):
            t = perf()
            tx(cases[(i * 7 + j) % len(cases)])
            lat[i].append(perf() - t)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, np.array([x for l in lat for x in l])


def bench_concurrency(engines: dict[str, Any], cases, ks: tuple[int, ...], total_tx: int,
                      peer_threads: dict[str, int]) -> dict[str, Any]:
    """(d) K gate threads on a shared Engine vs OpenCV with one pipeline per thread."""
    import cv2

    rows = []
    for k in ks:
        per = max(2, math.ceil(total_tx / k))
        for label, eng in engines.items():
            threshold = eng.operating_points[1e-4]
            wall, lat = _run_threads(k, per, lambda e=eng, t=threshold: one_to_one(e, t), cases)
            rows.append({"k": k, "pipeline": label,
                         "threads_per_request": eng.threads // eng.streams,
                         "transactions": int(lat.size), "throughput_tps": lat.size / wall,
                         **stats(lat)})
        for label, nthreads in peer_threads.items():
            cv2.setNumThreads(nthreads)
            threshold = next(iter(engines.values())).operating_points[1e-4]
            wall, lat = _run_threads(k, per, lambda t=threshold: one_to_one_peer(OpenCVPeer(), t),
                                     cases)
            rows.append({"k": k, "pipeline": label, "threads_per_request": nthreads,
                         "transactions": int(lat.size), "throughput_tps": lat.size / wall,
                         **stats(lat)})
    return {"rows": rows, "total_transactions_per_k": total_tx}


# ------------------------------------------------------------------------------------- output
def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}".replace(",", "")


def _lat(s: dict[str, float]) -> str:
    """``p50 | p95 | p99`` table cells of a :func:`stats` dict."""
    return " | ".join(_fmt(s[k]) for k in ("median_ms", "p95_ms", "p99_ms"))


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}" if a > 0 else "n/a"


def write_plots(res: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    paths = []
    # (a) stages
    rows = res["stages"]["rows"]
    names = [r["stage"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [r["matcher"]["median_ms"] for r in rows], 0.4, label="matcher")
    ax.bar(x + 0.2, [r["opencv"]["median_ms"] if r["opencv"] else 0 for r in rows], 0.4,
           label="OpenCV YN + SF")
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("median ms per face (log)")
    ax.set_title("(a) stages of a gate transaction")
    ax.legend()
    paths.append(_save(fig, out / PLOTS[0]))
    # (b) transactions
    tr = res["transactions"]
    labels = ["1:1 median", "1:1 p99", "1:N@500 median", "1:N@500 p99"]
    m = [tr["one_to_one"]["matcher"]["median_ms"], tr["one_to_one"]["matcher"]["p99_ms"],
         tr["one_to_n"]["matcher"]["median_ms"], tr["one_to_n"]["matcher"]["p99_ms"]]
    c = [tr["one_to_one"]["opencv"]["median_ms"], tr["one_to_one"]["opencv"]["p99_ms"],
         tr["one_to_n"]["opencv"]["median_ms"], tr["one_to_n"]["opencv"]["p99_ms"]]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, m, 0.4, label="matcher")
    ax.bar(x + 0.2, c, 0.4, label="OpenCV + numpy")
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms per transaction")
    ax.set_title("(b) end-to-end gate transactions")
    ax.legend()
    paths.append(_save(fig, out / PLOTS[1]))
    # (c) scaling
    rows = res["scaling"]["rows"]
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("gallery", "Gallery.identify"), ("faiss_flat", "faiss IndexFlatIP"),
                       ("numpy", "numpy G @ q")):
        (line,) = ax.plot(ns, [r[key]["median_ms"] for r in rows], "o-", label=f"{label} median")
        ax.plot(ns, [r[key]["p99_ms"] for r in rows], ":", color=line.get_color(), alpha=0.6,
                label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gallery size (templates)")
    ax.set_ylabel("ms per probe")
    ax.set_title("(c) identify latency vs gallery size")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / PLOTS[2]))
    # (d) concurrency
    rows = res["concurrency"]["rows"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r["pipeline"] for r in rows):
        rr = [r for r in rows if r["pipeline"] == label]
        a1.plot([r["k"] for r in rr], [r["throughput_tps"] for r in rr], "o-", label=label)
        a2.plot([r["k"] for r in rr], [r["p99_ms"] for r in rr], "o-", label=label)
    for a, yl in ((a1, "transactions / s"), (a2, "p99 ms")):
        a.set_xscale("log", base=2)
        a.set_xlabel("gate threads K")
        a.set_ylabel(yl)
        a.legend(fontsize=7)
    a1.set_title("(d) 1:1 throughput")
    a2.set_title("(d) 1:1 p99 latency")
    paths.append(_save(fig, out / PLOTS[3]))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_markdown(res: dict[str, Any], out: Path) -> Path:
    env = res["environment"]
    L: list[str] = ["# matcher bench", ""]
    L += [f"Command: `{env['command']}`  ", f"Date: {env['date']}  ",
          f"Wall time of the run: {res['wall_s']:.0f} s" + (" (quick: rough figures)"
                                                            if env["quick"] else ""), ""]
    L += [SECTIONS[0], "",
          (f"- CPU: {env['cpu_model']} ({env['cores']} cores usable; flags: "
          f"{', '.join(env['cpu_flags']) or 'none of interest'})"),
          f"- Python {platform.python_version()}, " + ", ".join(
              f"{k} {v}" for k, v in env["versions"].items()),
          f"- Thread budget (latency, sections a-c): `{json.dumps(env['budget_latency'])}`",
          f"- Thread budget (throughput, section d): `{json.dumps(env['budget_throughput'])}`",
          f"- Limits seen by threadpoolctl during a-c: `{json.dumps(env['limits'])}`",
          "", "`Engine.describe()` (sections a-c):", "", "```json",
          json.dumps(env["engine"], indent=1), "```", ""]
    st = res["stages"]
    L += [SECTIONS[1], "",
          (f"{st['faces']} faces x {st['repeat']}, interleaved face by face; milliseconds per face "
          f"(compare and unseal: mean of 500 / 20 calls per sample). matcher and OpenCV run the "
          f"same prepared model files with {env['engine']['threads']} inference thread(s)."), "",
          ("| stage | matcher p50 | matcher p95 | matcher p99 | OpenCV p50 | OpenCV p95 | "
           "OpenCV p99 | OpenCV / matcher (p50) |"),
          "|---|---|---|---|---|---|---|---|"]
    tot_m = tot_c = 0.0
    for r in st["rows"]:
        m, c = r["matcher"], r["opencv"]
        tot_m += m["median_ms"]
        if c:
            tot_c += c["median_ms"]
            L.append(f"| {r['stage']} | {_lat(m)} | {_lat(c)} | "
                     f"{_ratio(m['median_ms'], c['median_ms'])} |")
        else:
            L.append(f"| {r['stage']} | {_lat(m)} | - | - | - | - |")
    L += [f"| sum of medians | {_fmt(tot_m)} | | | {_fmt(tot_c)} | | | {_ratio(tot_m, tot_c)} |",
          "",
          ("OpenCV decodes with `cv2.imdecode`; matcher with Pillow (truncation checks, EXIF "
          "orientation). OpenCV's compare is `FaceRecognizerSF.match` on raw features; matcher's is "
          "`Engine.verify(template, template)` returning a Decision. Unsealing (AES-256-GCM QR "
          "text) has no OpenCV equivalent."), "", f"![stages]({PLOTS[0]})", ""]
    tr = res["transactions"]
    o, n = tr["one_to_one"], tr["one_to_n"]
    L += [SECTIONS[2], "",
          (f"{o['cases']} travellers x {env['repeat']}, interleaved. 1:1: JPEG bytes of the live "
          f"capture + sealed QR text -> Decision at FMR {o['fmr']:g}. 1:N: JPEG bytes -> "
          f"Identification over a flight gallery of {n['gallery']} templates (the travellers' "
          f"references + synthetic distractors) at FPIR {n['fpir']:g}; the peer is the OpenCV "
          f"pipeline + numpy `G @ q` top-5 at the same threshold."), "",
          ("| transaction | matcher p50 | matcher p95 | matcher p99 | peer p50 | peer p95 | "
           "peer p99 | peer / matcher (p50) | correct (matcher / peer) |"),
          "|---|---|---|---|---|---|---|---|---|"]
    for label, r, ok in (("1:1 (JPEG + QR -> Decision)", o, o["matched"]),
                         (f"1:N at {n['gallery']} (JPEG -> Identification)", n, n["identified"])):
        m, c = r["matcher"], r["opencv"]
        L.append(f"| {label} | {_lat(m)} | {_lat(c)} | "
                 f"{_ratio(m['median_ms'], c['median_ms'])} | "
                 f"{ok['matcher']}/{r['cases']} vs {ok['opencv']}/{r['cases']} |")
    L += ["", f"![transactions]({PLOTS[1]})", ""]
    sc = res["scaling"]["rows"]
    L += [SECTIONS[3], "",
          ("Unit-vector templates (128-d) with a planted mate per probe (cosine ~0.78); "
          "`Gallery.identify(template, k=5, threshold=0.5)` (index kind \"auto\") vs faiss "
          "`IndexFlatIP.search(q, 5)` with 1 OpenMP thread vs numpy `G @ q` + `argpartition` "
          "(BLAS at the budget's thread count), interleaved probe by probe. Recall@1 is the "
          "gallery's rank-1 agreeing with the exact search."), "",
          ("| templates | index | build s | probes | identify p50 | identify p95 | identify p99 | "
           "faiss flat p50 | faiss flat p95 | faiss flat p99 | numpy p50 | numpy p95 | numpy p99 "
           "| recall@1 |"),
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sc:
        L.append(f"| {r['n']} | {r['kind_in_use']} | {_fmt(r['build_s'])} | {r['probes']} | "
                 f"{_lat(r['gallery'])} | {_lat(r['faiss_flat'])} | {_lat(r['numpy'])} | "
                 f"{r['recall_at_1_vs_exact']:.3f} |")
    if not any(r["n"] >= 1_000_000 for r in sc):
        L += ["", "Quick run: no gallery of 10^5 or more." if env["quick"]
              else "Run without 10^6 templates (`--no-large`)."]
    L += ["", f"![gallery scaling]({PLOTS[2]})", ""]
    cc = res["concurrency"]
    L += [SECTIONS[4], "",
          (f"K threads each run the 1:1 transaction (about {cc['total_transactions_per_k']} "
          f"transactions in all per K) on ONE shared Engine; the OpenCV peer gets its own "
          f"detector + recogniser per thread (not thread-safe) and `cv2.setNumThreads` as shown."),
          "", ("| K | pipeline | inference threads per request | transactions | throughput tx/s "
          "| p50 ms | p95 ms | p99 ms |"), "|---|---|---|---|---|---|---|---|"]
    for r in cc["rows"]:
        L.append(f"| {r['k']} | {r['pipeline']} | {r['threads_per_request']} | "
                 f"{r['transactions']} | {_fmt(r['throughput_tps'])} | {_lat(r)} |")
    L += ["", f"![concurrency]({PLOTS[3]})", ""]
    path = out / REPORT
    path.write_text("\n".join(L) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- run
def run(cfg: BenchConfig, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure (a)-(d), write ``report.md``, ``results.json`` and the PNGs into ``cfg.out``;
    return the results."""
    from matcher import threads as tb
    from matcher.backends import available_cores
    from matcher.engine import Engine

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    repeat = cfg.n_repeat()
    res: dict[str, Any] = {}
    import cv2

    cv_before, log_before = cv2.getNumThreads(), cv2.utils.logging.getLogLevel()
    # OpenCV DNN warns once per network that targets are ignored by its new engine: noise here.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        with tb.budget(cfg.threads, "latency") as lat_budget:
            eng = Engine(backend=cfg.backend, precision=cfg.precision)
            cv2.setNumThreads(eng.threads)
            peer = OpenCVPeer()
            echo(f"engine: {eng.backend}/{eng.precision}, {eng.threads} inference thread(s); "
                 f"loading {cfg.n_faces()} faces")
            faces = gate_faces(cfg.n_faces())
            res["environment"] = {
                "command": cfg.command, "date": datetime.now(timezone.utc).isoformat(
                    timespec="seconds"), "quick": cfg.quick, "repeat": repeat,
                "cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "cores": available_cores(),
                "versions": versions(), "engine": eng.describe(),
                "budget_latency": lat_budget.as_dict(), "limits": tb.limits_report(),
                "opencv_threads": eng.threads, **cfg.extra}
            echo("(a) stages ...")
            res["stages"] = bench_stages(eng, peer, faces, repeat)
            echo("(b) transactions ...")
            cases = _transaction_cases(eng, peer, faces)
            res["transactions"] = bench_transactions(eng, peer, cases, repeat, rng)
            echo("(c) gallery sizes ...")
            res["scaling"] = bench_scaling(eng, cfg.gallery_sizes(), 40 if cfg.quick else 200,
                                           rng, echo)
        echo("(d) concurrency ...")
        with tb.budget(cfg.threads, "throughput") as thr_budget:
            res["environment"]["budget_throughput"] = thr_budget.as_dict()
            eng1 = Engine(backend=cfg.backend, precision=cfg.precision)  # budget's streams
            engines = {f"matcher, shared Engine ({eng1.threads} threads, {eng1.streams} "
                       "streams)": eng1}
            if (eng.threads, eng.streams) != (eng1.threads, eng1.streams):
                engines[f"matcher, shared Engine ({eng.threads} threads, 1 stream)"] = eng
            peers = {"OpenCV, pipeline per thread (1 thread)": 1}
            if eng.threads != 1:
                peers[f"OpenCV, pipeline per thread ({eng.threads} threads)"] = eng.threads
            res["concurrency"] = bench_concurrency(engines, cases, tuple(cfg.concurrency),
                                                   16 if cfg.quick else 96, peers)
    finally:
        cv2.setNumThreads(cv_before)
        cv2.utils.logging.setLogLevel(log_before)
    res["wall_s"] = time.perf_counter() - t_start
    write_plots(res, out)
    write_markdown(res, out)
    (out / RESULTS).write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    echo(f"wrote {out / REPORT}, {out / RESULTS} and {len(PLOTS)} plots in {res['wall_s']:.0f} s")
    return res


def summary_lines(res: dict[str, Any]) -> list[str]:
    """A few key figures for the terminal."""
    o, n = res["transactions"]["one_to_one"], res["transactions"]["one_to_n"]
    lines = [(f"1:1 transaction: matcher {o['matcher']['median_ms']:.1f} / "
             f"{o['matcher']['p99_ms']:.1f} ms (median / p99), OpenCV {o['opencv']['median_ms']:.1f}"
             f" / {o['opencv']['p99_ms']:.1f} ms"),
             (f"1:N at {n['gallery']}: matcher {n['matcher']['median_ms']:.1f} / "
             f"{n['matcher']['p99_ms']:.1f} ms, OpenCV + numpy {n['opencv']['median_ms']:.1f} / "
             f"{n['opencv']['p99_ms']:.1f} ms")]
    best: dict[str, dict[str, Any]] = {}
    for r in res["concurrency"]["rows"]:
        if r["pipeline"] not in best or r["throughput_tps"] > best[r["pipeline"]]["throughput_tps"]:
            best[r["pipeline"]] = r
    for label, r in best.items():
        lines.append(f"best throughput {label}: {r['throughput_tps']:.1f} tx/s at K={r['k']} "
                     f"(p99 {r['p99_ms']:.1f} ms)")
    return lines


__all__ = [
    "PLOTS",
    "REPORT",
    "RESULTS",
    "SECTIONS",
    "BenchConfig",
    "OpenCVPeer",
    "cpu_model",
    "run",
    "stats",
    "summary_lines",
]
