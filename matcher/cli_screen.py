"""``matcher screen``: batch watchlist screening (logic in :mod:`matcher.screening`).

Registered in :mod:`matcher.cli` with ``main.add_command(screen)``; also runs on its own:
``python -m matcher.cli_screen --watchlist W --probes P --out hits.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from matcher.errors import MatcherError

EXIT_NO_HITS, EXIT_HITS, EXIT_FAILURE = 0, 1, 2


@click.command("screen", context_settings={"max_content_width": 100})
@click.option("--watchlist", required=True, type=click.Path(dir_okay=False),
              help="Watchlist gallery file (as written by Gallery.save / `matcher gallery`). "
                   "Example: --watchlist galleries/wanted.gallery")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True),
              help="32-byte key of an encrypted watchlist. Example: --key-file /secure/wl.key")
@click.option("--probes", required=True, type=click.Path(exists=True),
              help="A directory (searched recursively for images), a CSV with a 'path' column "
                   "(relative to the CSV's folder) or a templates file (magic MTS1, then u32 "
                   "length + template bytes records). Example: --probes arrivals/2026-12-05/")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Hits file, one row per hit in probe order: probe, face, x, y, w, h, "
                   "subject_id, score, rank, threshold, fpir. Must not exist unless --resume. "
                   "Example: --out hits.csv")
@click.option("--jsonl", is_flag=True,
              help="Write JSON lines instead of CSV. Example: --out hits.jsonl --jsonl")
@click.option("--fpir", type=float, default=None,
              help="Target false positive identification rate (calibrated: 0.1, 0.03, 0.01, "
                   "0.003, 0.001); default 0.003. Example: --fpir 0.001")
@click.option("--threshold", type=float, default=None,
              help="Explicit score threshold instead of --fpir. Example: --threshold 0.45")
@click.option("--quality", type=click.Choice(["probe", "enrol", "none"]), default="probe",
              show_default=True,
              help="Quality policy each face must pass to be screened (model card policies); "
                   "failures are counted by reason. Example: --quality none")
@click.option("--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Candidates per face considered; those at or above the threshold are hits. "
                   "Example: --top-k 3")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, each with its own engine and cores/workers inference "
                   "threads (default: one per two cores; 1 runs in-process). Example: --workers 4")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Probes per batch (the unit of work and of checkpointing). "
                   "Example: --batch-size 64")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from OUT.progress (OUT is truncated to the last "
                   "checkpoint; no row repeated or lost). Example: --resume")
@click.option("--audit", type=click.Path(dir_okay=False), default=None,
              help="Audit log to append one JSON line to (default: OUT.audit.jsonl). "
                   "Example: --audit /var/log/matcher/screen.jsonl")
@click.option("--quiet", is_flag=True,
              help="No progress, per-file failure lines or summary (errors still go to stderr). "
                   "Example: --quiet")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Inference threads per worker (default: cores // workers; 1 with --ray). "
                   "Example: --threads 2")
@click.option("--ray", "ray_address", metavar="ADDRESS", default=None,
              help="Extract on Ray workers: 'local' starts a Ray cluster on this machine, 'auto' "
                   "joins the running one, 'ray://HOST:10001' a remote one. --workers then counts "
                   "Ray workers (default: free CPUs / --threads). The output equals a local "
                   "run's and --resume works across both. Needs pip install 'matcher[ray]'. "
                   "Example: --ray auto")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="Inference precision. Example: --precision fp32")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]),
              default="auto", show_default=True, help="Inference backend. Example: --backend openvino")
def screen(watchlist, key_file, probes, out, jsonl, fpir, threshold, quality, top_k, workers,
           batch_size, resume, audit, quiet, threads, ray_address, precision, backend):
    """Screen every face of every probe against a WATCHLIST; write the hits to OUT.

    A group photo is screened face by face. Unreadable files, images without a face and other
    bad probes are reported and counted by error type, never fatal. A summary (probes, faces,
    hits, failures by reason, rate) goes to stderr unless --quiet.

    \b
    Examples:
      matcher screen --watchlist wanted.gallery --probes arrivals/ --out hits.csv
      matcher screen --watchlist wanted.gallery --key-file wl.key --probes list.csv \\
          --out hits.jsonl --jsonl --fpir 0.001 --workers 2
      matcher screen --watchlist wanted.gallery --probes arrivals/ --out hits.csv --resume
      matcher screen --watchlist wanted.gallery --probes /nfs/batch/ --out hits.csv --ray auto

    \b
    Exit status: 0 no hits, 1 hits found, 2 failure (bad arguments, unreadable watchlist,
    existing OUT without --resume, interruption: rerun with --resume).
    """
    from matcher import screening

    if fpir is not None and threshold is not None:
        click.echo("error: give --fpir or --threshold, not both", err=True)
        sys.exit(EXIT_FAILURE)

    def failure(name: str, kind: str, msg: str) -> None:
        if not quiet:
            click.echo(f"failed: {name}: {kind}: {msg}", err=True)

    bar = None

    def progress(s):
        nonlocal bar
        if bar is None:
            bar = screening.Progress(s.probes, s.resumed_from)
        bar(s)

    try:
        key = Path(key_file).read_bytes() if key_file else None
        summary = screening.screen(
            watchlist, probes, out, key=key, fpir=fpir, threshold=threshold, top_k=top_k,
            workers=workers, threads=threads, batch_size=batch_size, resume=resume,
            jsonl=jsonl, audit=audit, engine_options={"backend": backend, "precision": precision},
            progress=None if quiet else progress, on_failure=failure,
            quality=None if quality == "none" else quality, ray_address=ray_address)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: rerun with --resume to continue {out}", err=True)
        sys.exit(EXIT_FAILURE)
    except MatcherError as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001  exit 1 means "hits": unexpected errors are 2
        click.echo(f"error: unexpected {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        click.echo(summary.format(), err=True)
    sys.exit(EXIT_HITS if summary.hits else EXIT_NO_HITS)


if __name__ == "__main__":  # pragma: no cover
    screen(prog_name="matcher screen")
