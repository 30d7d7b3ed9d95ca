"""The ``matcher`` command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from matcher.errors import MatcherError


def _engine(backend: str, precision: str, threads: int | None):
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


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MatcherError as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="matcher")
def main() -> None:
    """Face biometric matching for automated border control gates."""


@main.command()
def prepare() -> None:
    """Prepare the default models offline (fold int8 weights into runnable ONNX) and print them."""
    from matcher.models import prepare as prep
    from matcher.models.cards import card_ids, load_card

    for cid in card_ids():
        card = load_card(cid)
        path = prep.prepared_path(card)
        click.echo(f"{cid:16s} {path}  sha256={prep.sha256_file(path)[:16]}…")


@main.command()
@engine_options
def info(backend: str, precision: str, threads: int | None) -> None:
    """Show what the engine runs on (backend, precision, threads, SIMD, model hash)."""
    click.echo(json.dumps(_engine(backend, precision, threads).describe(), indent=2))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@engine_options
def detect(image: str, backend: str, precision: str, threads: int | None) -> None:
    """Print the faces found in IMAGE as JSON lines (box x,y,w,h; 5 landmarks; score)."""
    for face in _engine(backend, precision, threads).detect(image):
        click.echo(json.dumps({"box": [round(v, 2) for v in face.box],
                               "landmarks": np.round(face.landmarks, 2).tolist(),
                               "score": round(face.score, 4)}))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the vector as .npy here.")
@engine_options
def template(image: str, out: str | None, backend: str, precision: str, threads: int | None) -> None:
    """Extract the template of the primary face in IMAGE."""
    tpl = _engine(backend, precision, threads).template(image)
    if out:
        np.save(out, tpl.vector)
    click.echo(json.dumps({"model": tpl.model, "model_hash": tpl.model_hash, "dim": tpl.dim,
                           "vector": [round(float(v), 6) for v in tpl.vector]}))


@main.command()
@click.option("--data", type=click.Path(file_okay=False, exists=True),
              help="LFW-style folder (images/ + pairs.txt) or a Person/*.jpg folder. "
                   "Default: $MATCHER_LFW_DIR or ../shared/data/lfw-dev, else scikit-image's "
                   "astronaut.")
@click.option("--pairs", "max_pairs", type=click.IntRange(min=2), default=600, show_default=True,
              help="How many LFW pairs to run (600 = one fold; 3000 = all of lfw-dev).")
@engine_options
def demo(data: str | None, max_pairs: int, backend: str, precision: str,
         threads: int | None) -> None:
    """End-to-end demo on real faces: detect, align, embed, compare genuine and impostor pairs."""
    from matcher import demo as demo_mod

    eng = _engine(backend, precision, threads)
    demo_mod.run(eng, Path(data) if data else None, max_pairs, echo=click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
