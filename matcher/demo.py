"""``matcher demo``: the whole face -> template -> comparison path on real faces."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from matcher.datasets import Pair, default_lfw_dir, labelled_images, read_pairs
from matcher.engine import Engine
from matcher.errors import InputError
from matcher.evaluation import templates_of
from matcher.metrics import protocol_accuracy


def run(eng: Engine, data: Path | None, max_pairs: int, echo: Callable[[str], None] = print) -> dict:
    """Run the demo and return its summary (also printed through ``echo``)."""
    d = eng.describe()
    echo(f"engine: {d['model']} via {d['backend']} ({d['precision']}), {d['threads']} thread(s), "
         f"native SIMD {d['simd']}")
    root = data if data is not None else default_lfw_dir()
    if root is None:
        return _astronaut(eng, echo)
    if (root / "pairs.txt").is_file():
        pairs = _balanced(read_pairs(root), max_pairs)
        source = f"LFW pairs from {root}"
    else:
        pairs = _pairs_from_folder(root, max_pairs)
        source = f"labelled folder {root}"
    if not pairs:
        raise InputError(f"{root}: found no image pairs to compare")
    echo(f"data: {source}: {len(pairs)} pairs "
         f"({sum(p.genuine for p in pairs)} genuine, {sum(not p.genuine for p in pairs)} impostor)")
    return _run_pairs(eng, pairs, echo)


def _balanced(pairs: list[Pair], max_pairs: int) -> list[Pair]:
    folds = sorted({p.fold for p in pairs})
    per = max(1, max_pairs // (2 * len(folds)))
    out = []
    for f in folds:
        for genuine in (True, False):
            out += [p for p in pairs if p.fold == f and p.genuine == genuine][:per]
    return out


def _pairs_from_folder(root: Path, max_pairs: int) -> list[Pair]:
    people = labelled_images(root)
    names = list(people)
    multi = [n for n in names if len(people[n]) >= 2]
    n = max_pairs // 2
    pairs = [Pair(people[p][0], people[p][1], True, i % 5) for i, p in enumerate(multi[:n])]
    for i in range(min(n, len(names) - 1)):
        pairs.append(Pair(people[names[i]][0], people[names[i + 1]][0], False, i % 5))
    return pairs


def _run_pairs(eng: Engine, pairs: list[Pair], echo: Callable[[str], None]) -> dict:
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    t0 = time.perf_counter()
    templates, failures = templates_of(eng, paths, progress=True)
    elapsed = time.perf_counter() - t0
    usable = [p for p in pairs if p.a in templates and p.b in templates]
    scores = np.array([templates[p.a].similarity(templates[p.b]) for p in usable])
    genuine = np.array([p.genuine for p in usable])
    folds = np.array([p.fold for p in usable])
    acc, std, _ = protocol_accuracy(scores, genuine, folds)
    summary = {
        "images": len(paths),
        "templates": len(templates),
        "failures": failures,
        "ms_per_image": 1e3 * elapsed / max(len(paths), 1),
        "pairs_scored": len(usable),
        "genuine_mean": float(scores[genuine].mean()),
        "impostor_mean": float(scores[~genuine].mean()),
        "accuracy": acc,
        "accuracy_std": std,
    }
    echo(f"templates: {len(templates)}/{len(paths)} images "
         f"({summary['ms_per_image']:.1f} ms per image end to end: decode, detect, align, embed); "
         f"failures: {failures or 'none'}")
    echo(f"cosine similarity: genuine mean {summary['genuine_mean']:.3f}, "
         f"impostor mean {summary['impostor_mean']:.3f}")
    echo(f"protocol accuracy (threshold chosen on the other folds): {100 * acc:.2f}% "
         f"± {100 * std:.2f}")
    for fmr in (1e-3, 1e-4):
        t = eng.operating_points.get(fmr)
        if t is not None:
            fnmr = float(np.mean(scores[genuine] < t))
            fm = int(np.sum(scores[~genuine] >= t))
            summary[f"fnmr_at_{fmr:g}"] = fnmr
            echo(f"decisions at the calibrated FMR {fmr:g} threshold {t:.4f}: "
                 f"{100 * fnmr:.2f}% of genuine pairs rejected, {fm} impostor pair(s) accepted")
    hardest = usable[int(np.argmin(np.where(genuine, scores, 2)))]
    worst = usable[int(np.argmax(np.where(genuine, -2, scores)))]
    echo(f"least similar genuine pair: {hardest.a.name} ~ {hardest.b.name} "
         f"({templates[hardest.a].similarity(templates[hardest.b]):.3f})")
    echo(f"most similar impostor pair: {worst.a.name} ~ {worst.b.name} "
         f"({templates[worst.a].similarity(templates[worst.b]):.3f})")
    return summary


def _astronaut(eng: Engine, echo: Callable[[str], None]) -> dict:
    try:
        from skimage import data as skdata
    except ImportError:
        raise InputError(
            "no face data found: pass --data DIR (an LFW folder with pairs.txt, or Person/*.jpg "
            "sub-folders), set MATCHER_LFW_DIR, or `pip install scikit-image` for a one-face demo"
        ) from None
    import cv2

    rgb = skdata.astronaut()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    echo("data: no LFW folder found; using scikit-image's astronaut (one face)")
    faces = eng.detect(bgr)
    echo(f"faces found: {len(faces)}; best box {tuple(round(v) for v in faces[0].box)} "
         f"score {faces[0].score:.3f}" if faces else "faces found: 0")
    ref = eng.template(bgr)
    h, w = bgr.shape[:2]
    variants = {
        "half size": cv2.resize(bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        "rotated 10 deg": cv2.warpAffine(bgr, cv2.getRotationMatrix2D((w / 2, h / 2), 10, 1.0), (w, h)),
        "darker": (bgr * 0.6).astype(np.uint8),
        "JPEG q=40": cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], 1),
    }
    sims = {}
    for name, img in variants.items():
        sims[name] = ref.similarity(eng.template(img))
        echo(f"same face, {name:15s}: cosine {sims[name]:.3f}")
    return {"faces": len(faces), "similarities": sims}
