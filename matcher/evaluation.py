"""Verification evaluation: genuine/impostor scores, ROC/DET, EER, FNMR at FMR with bootstrap CIs.

Conventions: a comparison "matches" when ``score >= threshold``. FMR(t) is the fraction of impostor
scores ``>= t``; FNMR(t) the fraction of genuine scores ``< t``.

Confidence intervals are a bootstrap over comparisons (taken as independent, which LFW-style
all-pairs data are not, so intervals are on the narrow side): the impostor order statistic that
sets the threshold is drawn through its binomial distribution and the genuine count below the
threshold as a binomial draw, which is what resampling comparisons with replacement does to these
statistics, in O(replicates) instead of O(replicates x comparisons).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from matcher.datasets import labelled_images, read_pairs
from matcher.errors import CalibrationError, InputError, MatcherError

#: The operating points the toolkit reports and calibrates.
STANDARD_FMRS = (1e-2, 1e-3, 1e-4, 1e-5)


def fmr_key(fmr: float) -> str:
    """Canonical text of an FMR target, as stored in model cards (``"1e-04"``)."""
    return f"{fmr:.0e}"


@dataclass(frozen=True)
class Scores:
    """Genuine (same person) and impostor (different people) comparison scores."""

    genuine: np.ndarray
    impostor: np.ndarray

    def __post_init__(self) -> None:
        for name in ("genuine", "impostor"):
            a = np.sort(np.asarray(getattr(self, name), dtype=np.float64))
            if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
                raise InputError(f"{name} scores must be a non-empty finite 1-D array")
            object.__setattr__(self, name, a)  # kept sorted ascending

    def fmr(self, t: float | np.ndarray) -> np.ndarray:
        return 1.0 - np.searchsorted(self.impostor, t, side="left") / self.impostor.size

    def fnmr(self, t: float | np.ndarray) -> np.ndarray:
        return np.searchsorted(self.genuine, t, side="left") / self.genuine.size


def threshold_at_fmr(impostor_sorted: np.ndarray, fmr: float) -> float:
    """Lowest threshold whose FMR on these impostor scores is at most ``fmr``.

    With ``k = floor(fmr * n)`` impostors allowed at or above it, the threshold sits just above the
    (k+1)-th highest impostor score. Needs ``n >= 1 / fmr`` impostor scores.
    """
    n = impostor_sorted.size
    if not 0.0 < fmr < 1.0:
        raise InputError(f"fmr must be in (0, 1), got {fmr}")
    if n * fmr < 1.0:
        raise CalibrationError(f"{n} impostor scores cannot resolve FMR {fmr:g} "
                               f"(need at least {int(np.ceil(1 / fmr))})")
    k = int(np.floor(fmr * n + 1e-9))
    return float(np.nextafter(impostor_sorted[n - 1 - k], np.inf))


def eer(s: Scores) -> tuple[float, float]:
    """(equal error rate, threshold where FMR and FNMR cross)."""
    cand = np.unique(np.concatenate([s.genuine, np.quantile(s.impostor, np.linspace(0, 1, 4001))]))
    fmr, fnmr = s.fmr(cand), s.fnmr(cand)
    i = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[i] + fnmr[i]) / 2), float(cand[i])


def fnmr_at_fmr(s: Scores, fmr: float, *, bootstrap: int = 1000,
                rng: np.random.Generator | None = None) -> dict[str, Any]:
    """FNMR at the threshold giving ``fmr``, with a 95% bootstrap interval."""
    t = threshold_at_fmr(s.impostor, fmr)
    point = float(s.fnmr(t))
    out: dict[str, Any] = {"fmr_target": fmr, "threshold": t, "fnmr": point,
                           "fmr_measured": float(s.fmr(t))}
    if bootstrap > 0:
        rng = rng or np.random.default_rng(0)
        n_imp, n_gen = s.impostor.size, s.genuine.size
        k = rng.binomial(n_imp, fmr, size=bootstrap)  # impostors at/above threshold per replicate
        k = np.clip(k, 0, n_imp - 1)
        ts = np.nextafter(s.impostor[n_imp - 1 - k], np.inf)
        reps = rng.binomial(n_gen, s.fnmr(ts)) / n_gen
        lo, hi = np.quantile(reps, [0.025, 0.975])
        out["fnmr_ci95"] = [float(lo), float(hi)]
    return out


def det_curve(s: Scores, points: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR) over the whole score range, denser where FMR is small."""
    tail = s.impostor[-min(s.impostor.size, points):]
    cand = np.unique(np.concatenate([np.quantile(s.genuine, np.linspace(0, 1, points)),
                                     np.quantile(s.impostor, np.linspace(0, 1, points)), tail]))
    return cand, s.fmr(cand), s.fnmr(cand)


def roc_points(s: Scores, points: int = 200) -> dict[str, list[float]]:
    """ROC sampled at ``points`` thresholds spread evenly in log(FMR): threshold, FMR, TMR."""
    t, fmr, fnmr = det_curve(s)
    lo = max(1.0 / s.impostor.size, 1e-8)
    targets = np.logspace(np.log10(lo), 0, points)
    order = np.argsort(fmr)
    idx = np.unique(order[np.clip(np.searchsorted(fmr[order], targets), 0, len(order) - 1)])
    idx = idx[np.argsort(t[idx])]
    return {"threshold": [round(float(v), 6) for v in t[idx]],
            "fmr": [float(v) for v in fmr[idx]],
            "tmr": [float(1 - v) for v in fnmr[idx]]}


def all_pairs_scores(vectors: np.ndarray, labels: Sequence[str], block: int = 2048) -> Scores:
    """Every same-label pair is genuine, every cross-label pair impostor (each unordered pair once)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    if v.ndim != 2 or v.shape[0] != lab.size or v.shape[0] < 2:
        raise InputError("need one vector per label and at least two of them")
    gen, imp = [], []
    for s in range(0, v.shape[0], block):
        sim = v[s:s + block] @ v.T  # rows s.., all columns
        rows = np.arange(s, min(s + block, v.shape[0]))[:, None]
        upper = np.arange(v.shape[0])[None, :] > rows
        same = lab[rows] == lab[None, :]
        gen.append(sim[upper & same])
        imp.append(sim[upper & ~same])
    genuine, impostor = np.concatenate(gen), np.concatenate(imp)
    if genuine.size == 0 or impostor.size == 0:
        raise InputError("need at least two images of one person and two different people")
    return Scores(np.clip(genuine, -1, 1), np.clip(impostor, -1, 1))


def summarise(s: Scores, *, fmrs: Sequence[float] = STANDARD_FMRS, bootstrap: int = 1000) -> dict[str, Any]:
    """EER and FNMR at each FMR that the impostor count can resolve."""
    e, et = eer(s)
    report: dict[str, Any] = {"genuine_scores": int(s.genuine.size),
                              "impostor_scores": int(s.impostor.size),
                              "eer": e, "eer_threshold": et, "roc": roc_points(s),
                              "fnmr_at_fmr": {}}
    for f in fmrs:
        try:
            report["fnmr_at_fmr"][fmr_key(f)] = fnmr_at_fmr(s, f, bootstrap=bootstrap)
        except CalibrationError as exc:
            report["fnmr_at_fmr"][fmr_key(f)] = {"fmr_target": f, "unresolved": str(exc)}
    return report


def plot_det(s: Scores, path: Path, title: str) -> None:
    """DET plot (FNMR vs FMR on normal-deviate axes) as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("DET plots need matplotlib: pip install 'matcher[eval]'") from None
    from statistics import NormalDist

    ppf = np.vectorize(NormalDist().inv_cdf)
    _, fmr, fnmr = det_curve(s)
    lo = 1e-6
    ok = (fmr > lo) & (fnmr > lo) & (fmr < 0.5) & (fnmr < 0.5)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(ppf(fmr[ok]), ppf(fnmr[ok]), lw=1.5)
    ticks = [1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.4]
    ax.set_xticks(ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(ppf(max(lo, 0.5 / s.impostor.size)), ppf(0.5))
    ax.set_ylim(ppf(max(lo, 0.5 / s.genuine.size)), ppf(0.5))
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], scores: Scores, out_dir: Path, title: str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``det.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    js = out_dir / "report.json"
    js.write_text(json.dumps(report, indent=2) + "\n")
    png = out_dir / "det.png"
    plot_det(scores, png, title)
    return js, png


def templates_of(engine: Any, paths: Sequence[Path], progress: bool = False
                 ) -> tuple[dict[Path, Any], dict[str, int]]:
    """``({path: Template}, {error type: count})`` for ``paths``, in engine-sized batches."""
    out: dict[Path, Any] = {}
    failures: dict[str, int] = {}
    bar = tqdm(total=len(paths), desc="templates", unit="img", leave=False, disable=not progress)
    step = engine.batch_size
    for i in range(0, len(paths), step):
        chunk = list(paths[i:i + step])
        for path, res in zip(chunk, engine.templates(chunk, on_error="return")):
            if isinstance(res, MatcherError):
                failures[type(res).__name__] = failures.get(type(res).__name__, 0) + 1
            else:
                out[path] = res
        bar.update(len(chunk))
    bar.close()
    return out, failures


def folder_templates(engine: Any, root: Path, progress: bool = False
                     ) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Templates of every image of a ``Person/*.jpg`` folder: (vectors, labels, failures)."""
    people = labelled_images(root)
    if not people:
        raise InputError(f"{root}: no Person/ sub-folders with images")
    labelled = [(p, name) for name, files in people.items() for p in files]
    tpls, failures = templates_of(engine, [p for p, _ in labelled], progress)
    kept = [(tpls[p].vector, name) for p, name in labelled if p in tpls]
    if len(kept) < 2:
        raise InputError(f"{root}: fewer than two usable face images")
    return np.stack([v for v, _ in kept]), [n for _, n in kept], failures


def evaluate(engine: Any, root: Path, protocol: str, *, bootstrap: int = 1000,
             progress: bool = False) -> tuple[dict[str, Any], Scores]:
    """Evaluate ``engine`` on ``root``: ``protocol`` "pairs" (LFW pairs.txt) or "all" (every
    image pair of the labelled folder ``root/images`` or ``root``)."""
    from matcher.metrics import protocol_accuracy

    report: dict[str, Any] = {"data": str(root), "protocol": protocol, "engine": engine.describe()}
    if protocol == "pairs":
        pairs = read_pairs(root)
        tpls, failures = templates_of(engine, sorted({p.a for p in pairs} | {p.b for p in pairs}),
                                      progress)
        usable = [p for p in pairs if p.a in tpls and p.b in tpls]
        if not usable:
            raise InputError(f"{root}: no pair has templates for both images")
        sc = np.array([tpls[p.a].similarity(tpls[p.b]) for p in usable])
        gen = np.array([p.genuine for p in usable])
        acc, std, per_fold = protocol_accuracy(sc, gen, np.array([p.fold for p in usable]))
        report.update(pairs=len(pairs), pairs_without_template=len(pairs) - len(usable),
                      accuracy=acc, accuracy_std=std, accuracy_per_fold=per_fold)
        scores = Scores(sc[gen], sc[~gen])
    elif protocol == "all":
        images = root / "images" if (root / "images").is_dir() else root
        vecs, labels, failures = folder_templates(engine, images, progress)
        scores = all_pairs_scores(vecs, labels)
        report.update(images=len(labels) + sum(failures.values()), subjects=len(set(labels)))
    else:
        raise InputError(f"protocol must be 'pairs' or 'all', got {protocol!r}")
    report["failures_to_acquire"] = failures
    report.update(summarise(scores, bootstrap=bootstrap))
    return report, scores


def format_report(r: dict[str, Any]) -> str:
    """Human-readable summary of :func:`evaluate`'s report."""
    lines = [(f"{r['protocol']} protocol on {r['data']}: {r['genuine_scores']} genuine, "
              f"{r['impostor_scores']} impostor comparisons; failures to acquire: "
              f"{r['failures_to_acquire'] or 'none'}")]
    if "accuracy" in r:
        lines.append(f"accuracy (fold-wise threshold): {100 * r['accuracy']:.2f}% "
                     f"± {100 * r['accuracy_std']:.2f}")
    lines.append(f"EER: {100 * r['eer']:.2f}% (threshold {r['eer_threshold']:.4f})")
    for k, v in r["fnmr_at_fmr"].items():
        if "unresolved" in v:
            lines.append(f"FNMR at FMR {k}: not resolvable ({v['unresolved']})")
        else:
            ci = v.get("fnmr_ci95")
            ci_s = f" [95% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%]" if ci else ""
            lines.append(f"FNMR at FMR {k}: {100 * v['fnmr']:.2f}%{ci_s} "
                         f"(threshold {v['threshold']:.4f})")
    return "\n".join(lines)
