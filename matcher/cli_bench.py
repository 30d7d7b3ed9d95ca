"""``matcher bench``: speed report of this machine, matcher beside its peers (logic in
:mod:`matcher.bench`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default="bench", show_default=True,
              help="Folder for report.md, results.json and the PNG plots.")
@click.option("--quick", is_flag=True,
              help="Small counts and no gallery of 10^5 or more (seconds; rough figures).")
@click.option("--large/--no-large", default=True, show_default=True,
              help="Measure a gallery of 10^6 templates in the full run (exact index: ~5 s to "
                   "build, ~2.7 GB of memory at peak; --quick never does).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Total thread budget (default: $MATCHER_THREADS or all cores).")
@click.option("--faces", type=click.IntRange(min=1), default=None,
              help="Face images to run on (default 48; --quick 6).")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Passes over the faces (default 3; --quick 1).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="Inference precision.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]),
              default="auto", show_default=True, help="Inference backend.")
def bench(out: str, quick: bool, large: bool, threads: int | None, faces: int | None,
          repeat: int | None, precision: str, backend: str) -> None:
    """Measure gate-transaction speed beside OpenCV, FAISS and numpy; write a Markdown report.

    Sections: (a) per-stage times (decode, detect, align, embed, unseal, compare) vs OpenCV
    FaceDetectorYN + FaceRecognizerSF on the same model files; (b) end-to-end 1:1 and 1:N
    (flight gallery of 500) transactions, p50 / p95 / p99; (c) identify latency vs gallery size
    vs faiss IndexFlatIP and numpy; (d) K gate threads (1, 2, 4, 8) on a shared Engine:
    throughput and p99 vs OpenCV. The full run takes about a minute here; --quick seconds.

    Example: matcher bench --out bench-report
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise click.UsageError("matcher bench plots with matplotlib: pip install 'matcher[bench]'")
    from matcher import bench as b

    args = ["matcher", "bench", "--out", out] + (["--quick"] if quick else []) + (
        [] if large else ["--no-large"])
    for name, value in (("--threads", threads), ("--faces", faces), ("--repeat", repeat)):
        if value is not None:
            args += [name, str(value)]
    if precision != "auto":
        args += ["--precision", precision]
    if backend != "auto":
        args += ["--backend", backend]
    cfg = b.BenchConfig(out=Path(out), quick=quick, large=large, threads=threads,
                        backend=backend, precision=precision, faces=faces, repeat=repeat,
                        command=shlex.join(args))
    res = b.run(cfg, echo=lambda s: click.echo(s, err=True))
    for line in b.summary_lines(res):
        click.echo(line)
    click.echo(f"report: {Path(out) / b.REPORT}")
