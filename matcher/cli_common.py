"""Pieces shared by the ``matcher`` sub-commands (kept apart from ``matcher.cli`` so command
modules can import them without a cycle)."""

from __future__ import annotations

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
