"""Error-versus-reject curves (ERC) of the face quality components on labelled face data.

Standard ERC (ISO/IEC 29794-1): the threshold is fixed once from *all* comparisons at the target
FMR (1e-3 here); then, as the lowest-quality fraction of genuine comparisons is rejected, FNMR is
recomputed on the rest. A comparison's quality is the minimum of its two images' qualities. A
quality measure is useful when its curve falls faster than random rejection's (which stays flat at
the initial FNMR on average).

Qualities per image: the unified score, and each component turned into "higher is better":
``face_size``, ``sharpness``, ``contrast``, ``confidence`` as they are; ``-|yaw|``, ``-|pitch|``,
``-|roll|``; ``-|brightness - 128|``; ``-other_faces``. Ties are broken at random (fixed seed).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from matcher import quality as _quality
from matcher.datasets import labelled_images
from matcher.errors import InputError, MatcherError
from matcher.evaluation import fmr_key

#: Rejected fractions of genuine comparisons on the curve: 0%, 1%, ..., 20%.
FRACTIONS = tuple(round(0.01 * i, 2) for i in range(21))
#: Fractions printed in the summary table.
TABLE_FRACTIONS = (0.0, 0.05, 0.10, 0.20)
#: Random-rejection baseline: mean over this many random orders.
RANDOM_DRAWS = 50


def _goodness(name: str, values: np.ndarray) -> np.ndarray:
    if name in ("yaw", "pitch", "roll", "other_faces"):
        return -np.abs(values)
    if name == "brightness":
        return -np.abs(values - 128.0)
    return values


def collect(engine: Any, paths: Sequence[Path], *, progress: bool = False
            ) -> tuple[np.ndarray, list[int], list[dict[str, Any]], dict[str, int]]:
    """Templates and quality of the primary face of each image, one detection per image.

    Returns ``(vectors (M, D), kept indices into paths, per-image records, failures)``; a record
    holds the raw component values (``other_faces`` counted at every policy's fraction) and the
    unified score.
    """
    rec = engine.recognizer
    fractions = sorted({float(p.get("other_face_fraction") or 0.5)
                        for p in engine.quality_policies.values()} | {0.5})
    vecs: list[np.ndarray] = []
    kept: list[int] = []
    records: list[dict[str, Any]] = []
    failures: dict[str, int] = {}
    bar = tqdm(total=len(paths), desc="templates + quality", unit="img", leave=False,
               disable=not progress)
    step = engine.batch_size
    for start in range(0, len(paths), step):
        chunk = paths[start:start + step]
        batch = rec.new_batch(len(chunk))
        n = 0
        for i, path in enumerate(chunk):
            try:
                face, faces = engine.align_primary(path, batch, n)
            except MatcherError as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                continue
            stats = _quality.crop_statistics(batch, n, 1, rgb=rec.swap_rb)[0]
            values = _quality.measure(face, faces, stats, 0.5)
            q = _quality.assess(values, engine.quality_scoring, None, {}, face)
            records.append({"values": values, "score": q.score,
                            "other_faces_at": {f: _quality.count_other_faces(face, faces, f)
                                               for f in fractions}})
            kept.append(start + i)
            n += 1
        if n:
            vecs.append(rec.embed(batch[:n]))
        bar.update(len(chunk))
    bar.close()
    if not vecs:
        raise InputError("no usable face image")
    return np.concatenate(vecs), kept, records, failures


def impostor_threshold(vectors: np.ndarray, labels: np.ndarray, fmr: float,
                       block: int = 1024) -> tuple[float, int]:
    """``(threshold, impostor count)``: as :func:`matcher.evaluation.threshold_at_fmr` over every
    cross-label pair, without holding all impostor scores (only the top ``k + 1`` per block)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    n = v.shape[0]
    counts = np.bincount(labels)
    n_imp = n * (n - 1) // 2 - int(np.sum(counts * (counts - 1) // 2))
    if n_imp * fmr < 1.0:
        raise InputError(f"{n_imp} impostor comparisons cannot resolve FMR {fmr:g}")
    k = int(np.floor(fmr * n_imp + 1e-9))
    top = np.empty(0, np.float32)
    for s in range(0, n, block):
        sim = v[s:s + block] @ v.T
        rows = np.arange(s, min(s + block, n))[:, None]
        mask = (np.arange(n)[None, :] > rows) & (labels[rows] != labels[None, :])
        cand = np.concatenate([top, sim[mask]])
        if cand.size > k + 1:
            cand = np.partition(cand, cand.size - (k + 1))[cand.size - (k + 1):]
        top = cand
    kth = float(np.clip(np.sort(top)[-(k + 1)], -1.0, 1.0))  # (k+1)-th highest
    return float(np.nextafter(kth, np.inf)), n_imp


def genuine_pairs(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs (G, 2) image indices, scores (G,))`` of every same-label pair."""
    pairs = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if idx.size > 1:
            a, b = np.triu_indices(idx.size, 1)
            pairs.append(np.stack([idx[a], idx[b]], axis=1))
    if not pairs:
        raise InputError("need at least two images of one person")
    p = np.concatenate(pairs)
    scores = np.clip(np.einsum("ij,ij->i", vectors[p[:, 0]], vectors[p[:, 1]]), -1, 1)
    return p, scores


def erc_curve(gen_scores: np.ndarray, pair_quality: np.ndarray, threshold: float,
              fractions: Sequence[float], rng: np.random.Generator) -> list[float]:
    """FNMR at ``threshold`` after rejecting the lowest-quality fraction of genuine comparisons."""
    g = gen_scores.size
    tie = rng.random(g)
    order = np.lexsort((tie, pair_quality))  # ascending quality, random among ties
    miss = (gen_scores[order] < threshold).astype(np.int64)
    miss_after = np.concatenate([np.cumsum(miss[::-1])[::-1], [0]])  # misses in order[i:]
    out = []
    for f in fractions:
        r = round(f * g)
        out.append(float(miss_after[r] / (g - r)) if g > r else float("nan"))
    return out


def compute_erc(engine: Any, root: Path, *, fmr: float = 1e-3, progress: bool = False,
                seed: int = 0) -> dict[str, Any]:
    """ERC report for the ``Person/*.jpg`` folder ``root`` (or ``root/images``)."""
    images = root / "images" if (root / "images").is_dir() else root
    people = labelled_images(images)
    if not people:
        raise InputError(f"{images}: no Person/ sub-folders with images")
    labelled = [(p, name) for name, files in people.items() for p in files]
    vecs, kept, records, failures = collect(engine, [p for p, _ in labelled], progress=progress)
    labels = np.unique([labelled[i][1] for i in kept], return_inverse=True)[1]
    threshold, n_imp = impostor_threshold(vecs, labels, fmr)
    pairs, gen = genuine_pairs(vecs, labels)
    rng = np.random.default_rng(seed)

    per_image: dict[str, np.ndarray] = {"unified": np.array([r["score"] for r in records])}
    for name in _quality.COMPONENTS:
        per_image[name] = _goodness(name, np.array([r["values"][name] for r in records]))
    curves: dict[str, list[float]] = {}
    for name, q in per_image.items():
        pq = np.minimum(q[pairs[:, 0]], q[pairs[:, 1]])
        curves[name] = erc_curve(gen, pq, threshold, FRACTIONS, rng)
    draws = [erc_curve(gen, rng.random(gen.size), threshold, FRACTIONS, rng)
             for _ in range(RANDOM_DRAWS)]
    curves["random"] = [float(v) for v in np.mean(draws, axis=0)]

    def area(c: list[float]) -> float:  # mean FNMR over the curve (lower: better ranking)
        return float(np.mean(c))

    policies = {}
    for pname, pol in engine.quality_policies.items():
        frac = float(pol.get("other_face_fraction") or 0.5)
        ok = np.array([_quality.assess({**r["values"], "other_faces": r["other_faces_at"][frac]},
                                       engine.quality_scoring, pname, pol).passed
                       for r in records])
        both = ok[pairs[:, 0]] & ok[pairs[:, 1]]
        policies[pname] = {"images_passing": float(ok.mean()),
                           "genuine_comparisons_kept": int(both.sum()),
                           "fnmr_on_kept": float(np.mean(gen[both] < threshold))
                           if both.any() else None}
    table = {name: {f"{round(100 * f)}%": c[FRACTIONS.index(f)] for f in TABLE_FRACTIONS}
             for name, c in curves.items()}
    return {"data": str(root), "images": len(labelled), "images_used": len(kept),
            "subjects": int(labels.max() + 1), "failures_to_acquire": failures,
            "fmr": fmr, "fmr_key": fmr_key(fmr), "threshold": threshold,
            "genuine_comparisons": int(gen.size), "impostor_comparisons": int(n_imp),
            "pair_quality": "min of the two images' qualities",
            "fractions_rejected": list(FRACTIONS), "fnmr": curves,
            "mean_fnmr_over_curve": {k: area(c) for k, c in curves.items()},
            "table": table, "random_draws": RANDOM_DRAWS, "policies": policies,
            "engine": engine.describe()}


def plot_erc(report: dict[str, Any], path: Path) -> None:
    """ERC plot (FNMR vs fraction rejected) as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("ERC plots need matplotlib: pip install 'matcher[eval]'") from None
    x = 100 * np.array(report["fractions_rejected"])
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, c in report["fnmr"].items():
        style = {"unified": {"lw": 2.5, "color": "black"},
                 "random": {"lw": 2, "color": "grey", "ls": "--"}}.get(name, {"lw": 1})
        ax.plot(x, 100 * np.array(c), label=name, **style)
    ax.set_xlabel("genuine comparisons rejected, lowest quality first (%)")
    ax.set_ylabel(f"FNMR at FMR {report['fmr']:g} (%)")
    ax.set_title(f"Error vs reject, {Path(report['data']).name}: threshold "
                 f"{report['threshold']:.4f} from all comparisons")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_erc(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``erc.json`` and ``erc.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report,
              "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    js = out_dir / "erc.json"
    js.write_text(json.dumps(report, indent=2) + "\n")
    png = out_dir / "erc.png"
    plot_erc(report, png)
    return js, png


def format_erc(report: dict[str, Any]) -> str:
    """Summary table: FNMR (%) at 0/5/10/20% rejected for each quality measure."""
    cols = list(next(iter(report["table"].values())).keys())
    lines = [(f"ERC on {report['data']}: {report['genuine_comparisons']} genuine, "
              f"{report['impostor_comparisons']} impostor comparisons; FMR {report['fmr']:g} "
              f"threshold {report['threshold']:.4f}"),
             (f"{'quality':12s} " + " ".join(f"{c + ' rej.':>10s}" for c in cols)
              + f" {'mean':>8s}")]
    for name, row in report["table"].items():
        lines.append(f"{name:12s} " + " ".join(f"{100 * v:9.3f}%" for v in row.values())
                     + f" {100 * report['mean_fnmr_over_curve'][name]:7.3f}%")
    for pname, p in report["policies"].items():
        fk = p["fnmr_on_kept"]
        lines.append(f"policy {pname}: {100 * p['images_passing']:.2f}% of images pass; "
                     f"FNMR on comparisons of two passing images "
                     f"{'n/a' if fk is None else f'{100 * fk:.3f}%'} "
                     f"({p['genuine_comparisons_kept']} comparisons)")
    return "\n".join(lines)
