"""Pieces shared by the ``matcher`` sub-commands (kept apart from ``matcher.cli`` so command
modules can import them without a cycle)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click


def engine_from_options(backend: str, precision: str, threads: int | None):
    """An Engine from the --backend, --precision and --threads options."""
    from matcher.engine import Engine

    return Engine(backend=backend, precision=precision, threads=threads)


def engine_options(f):
    f = click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="Inference threads (default: all cores).")(f)
    f = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
                     show_default=True, help="Inference precision.")(f)
    f = click.option("--backend", type=click.Choice(["auto", "onnxruntime", "openvino"]),
                     default="auto", show_default=True, help="Inference backend.")(f)
    return f


def fail(exc: BaseException) -> NoReturn:
    """Report a typed error or an OS error on stderr and exit with status 2."""
    name = f"{type(exc).__name__}: " if not isinstance(exc, OSError) else ""
    click.echo(f"error: {name}{exc}", err=True)
    sys.exit(2)


def exit_with_decision(d: Any, as_json: bool) -> NoReturn:
    """Print a 1:1 :class:`~matcher.Decision` and exit 0 for a match, 1 for no match."""
    if as_json:
        click.echo(json.dumps({"match": d.match, "score": round(d.score, 6),
                               "threshold": round(d.threshold, 6), "fmr": d.fmr, "model": d.model}))
    else:
        click.echo(f"{'MATCH' if d.match else 'NO MATCH'}  score {d.score:.4f}  "
                   f"threshold {d.threshold:.4f} (FMR {d.fmr:g}, {d.model})")
    sys.exit(0 if d.match else 1)
