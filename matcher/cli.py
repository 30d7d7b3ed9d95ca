"""The ``matcher`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from matcher.cli_common import engine_from_options, engine_options, exit_with_decision, fail
from matcher.errors import MatcherError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (MatcherError, OSError) as exc:
            fail(exc)


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
    click.echo(json.dumps(engine_from_options(backend, precision, threads).describe(), indent=2))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@engine_options
def detect(image: str, backend: str, precision: str, threads: int | None) -> None:
    """Print the faces found in IMAGE as JSON lines (box x,y,w,h; 5 landmarks; score)."""
    for face in engine_from_options(backend, precision, threads).detect(image):
        click.echo(json.dumps({"box": [round(v, 2) for v in face.box],
                               "landmarks": np.round(face.landmarks, 2).tolist(),
                               "score": round(face.score, 4)}))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the vector as .npy here.")
@engine_options
def template(image: str, out: str | None, backend: str, precision: str, threads: int | None) -> None:
    """Extract the template of the primary face in IMAGE."""
    tpl = engine_from_options(backend, precision, threads).template(image)
    if out:
        np.save(out, tpl.vector)
    click.echo(json.dumps({"model": tpl.model, "model_hash": tpl.model_hash, "dim": tpl.dim,
                           "vector": [round(float(v), 6) for v in tpl.vector]}))


def _data_root(data: str | None) -> Path:
    from matcher.datasets import default_lfw_dir

    root = Path(data) if data else default_lfw_dir()
    if root is None:
        raise click.UsageError("no data: pass DATA or set MATCHER_LFW_DIR")
    return root


def _images_dir(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


@main.command()
@click.argument("data", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--write-card", type=click.Path(dir_okay=False, exists=True),
              help="Store the result in this model card JSON (e.g. models/sface-2021dec.json).")
@engine_options
def calibrate(data: str | None, write_card: str | None, backend: str, precision: str,
              threads: int | None) -> None:
    """Calibrate thresholds at FMR 1e-2..1e-5 on a labelled folder (default: lfw-dev).

    Every same-person pair of images is a genuine comparison, every cross-person pair an impostor
    comparison. Prints the record; --write-card stores it under the engine's model hash.

    Example: matcher calibrate ../shared/data/lfw-dev --write-card models/sface-2021dec.json
    """
    from matcher.calibration import calibrate as run_calibration
    from matcher.calibration import write_into_card

    root = _data_root(data)
    eng = engine_from_options(backend, precision, threads)
    record, _ = run_calibration(eng, _images_dir(root), data_name=root.name,
                                progress=sys.stderr.isatty())
    click.echo(json.dumps({eng.model_hash: record}, indent=2))
    if write_card:
        write_into_card(Path(write_card), eng.model_hash, record)
        click.echo(f"written to {write_card}", err=True)


@main.command()
@click.argument("data", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--protocol", type=click.Choice(["auto", "pairs", "all"]), default="auto",
              show_default=True,
              help="pairs: the LFW pairs.txt in DATA (fold-wise accuracy); all: every image pair "
                   "of the labelled folder; auto: pairs when DATA has pairs.txt.")
@click.option("--out", type=click.Path(file_okay=False), default="evaluation", show_default=True,
              help="Folder for report.json and det.png.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the 95% intervals (0: none).")
@engine_options
def evaluate(data: str | None, protocol: str, out: str, bootstrap: int, backend: str,
             precision: str, threads: int | None) -> None:
    """Accuracy, EER, FNMR at FMR 1e-2..1e-5 with 95% intervals, DET plot (default data: lfw-dev).

    Example: matcher evaluate ../shared/data/lfw-dev --protocol all --out eval-lfw
    """
    from matcher import evaluation as ev

    root = _data_root(data)
    eng = engine_from_options(backend, precision, threads)
    if protocol == "auto":
        protocol = "pairs" if (root / "pairs.txt").is_file() else "all"
    report, scores = ev.evaluate(eng, root, protocol, bootstrap=bootstrap,
                                 progress=sys.stderr.isatty())
    js, png = ev.write_report(report, scores, Path(out), f"{eng.model} on {root.name} ({protocol})")
    click.echo(ev.format_report(report))
    click.echo(f"wrote {js} and {png}")


def _load_side(arg: str, key: bytes | None):
    """An image path, a serialised template file, or a sealed template file / QR text."""
    from matcher.types import Template

    path = Path(arg)
    data = path.read_bytes() if path.is_file() else None
    if data is None:
        raise click.BadParameter(f"{arg}: no such file")
    if data[:2] == b"MT":
        return Template.from_bytes(data)
    if data[:2] == b"MS" or data[:4] == b"MS1:":
        if key is None:
            raise click.BadParameter(f"{arg} is a sealed template: pass --key-file")
        from matcher import sealing

        if data[:4] == b"MS1:":
            return sealing.unseal_text(data.decode("ascii", "replace").strip(), key)
        return sealing.unseal(data, key)
    return arg


@main.command()
@click.argument("probe", type=click.Path(dir_okay=False))
@click.argument("reference", type=click.Path(dir_okay=False))
@click.option("--fmr", type=float, default=1e-4, show_default=True,
              help="Target false match rate (a calibrated point: 1e-2, 1e-3, 1e-4, 1e-5).")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True),
              help="32-byte AES key for sealed templates.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@engine_options
def verify(probe: str, reference: str, fmr: float, key_file: str | None, as_json: bool,
           backend: str, precision: str, threads: int | None) -> None:
    """Is PROBE the same person as REFERENCE? Each is an image, a template file or a sealed one.

    Exit status: 0 match, 1 no match, 2 error (reason on stderr).

    Example: matcher verify live.jpg card.tpl --fmr 1e-3
    """
    key = Path(key_file).read_bytes() if key_file else None
    eng = engine_from_options(backend, precision, threads)
    exit_with_decision(eng.verify(_load_side(probe, key), _load_side(reference, key), fmr=fmr),
                       as_json)


# ---------------------------------------------------------------------- galleries (1:N)
def _store(store: str, key_file: str | None, require_encryption: bool, engine=None):
    from matcher.store import GalleryStore

    key = Path(key_file).read_bytes() if key_file else None
    return GalleryStore(store, key=key, require_encryption=require_encryption, engine=engine)


def store_options(f):
    f = click.option("--require-encryption", is_flag=True,
                     help="Refuse plaintext gallery files.")(f)
    f = click.option("--key-file", type=click.Path(dir_okay=False, exists=True),
                     help="32-byte key: galleries are encrypted at rest (AES-256-GCM).")(f)
    f = click.option("--store", type=click.Path(file_okay=False), default="galleries",
                     show_default=True, help="Directory of named galleries.")(f)
    return f


def _when(value: str | None):
    from datetime import datetime

    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a timezone, e.g. 2026-12-05T18:00+00:00")
    return t


@main.group()
def gallery() -> None:
    """Create, fill, inspect and purge galleries (e.g. one per flight)."""


@gallery.command("create")
@click.argument("name")
@click.option("--kind", default="auto", show_default=True,
              help="Index: auto, flat, hnsw, ivf, or a FAISS factory string like 'IVF1024,SQ8'.")
@click.option("--expires", help="ISO 8601 time after which `purge` deletes the gallery.")
@store_options
@engine_options
def gallery_create(name, kind, expires, store, key_file, require_encryption, backend, precision,
                   threads):
    """Create an empty gallery NAME bound to the engine's model.

    Example: matcher gallery create CX880-20261205 --expires 2026-12-05T23:59+08:00
    """
    eng = engine_from_options(backend, precision, threads)
    st = _store(store, key_file, require_encryption, eng)
    g = st.create(name, eng, kind=kind, expires_at=_when(expires))
    click.echo(json.dumps(g.info()))


@gallery.command("enroll")
@click.argument("name")
@click.argument("items", nargs=-1)
@click.option("--folder", type=click.Path(file_okay=False, exists=True),
              help="Enrol every Person/*.jpg of this folder, the sub-folder name as subject id.")
@click.option("--expires", help="ISO 8601 expiry of the enrolled subjects.")
@click.option("--quality", type=click.Choice(["enrol", "probe", "none"]), default="enrol",
              show_default=True, help="Quality policy an enrolment image must pass.")
@store_options
@engine_options
def gallery_enroll(name, items, folder, expires, quality, store, key_file, require_encryption,
                   backend, precision, threads):
    """Enrol subjects into gallery NAME: `ID IMAGE [IMAGE...]` or --folder DIR.

    Prints each image that failed and why; exit 0 when everything enrolled, 2 otherwise.

    Example: matcher gallery enroll CX880 TOKEN-123 passport.jpg checkin.jpg
    """
    from matcher.datasets import labelled_images

    eng = engine_from_options(backend, precision, threads)
    st = _store(store, key_file, require_encryption, eng)
    g = st.get(name)
    if folder:
        work = [(person, p) for person, files in labelled_images(Path(folder)).items()
                for p in files]
    elif len(items) >= 2:
        work = [(items[0], Path(p)) for p in items[1:]]
    else:
        raise click.UsageError("give ID IMAGE [IMAGE...] or --folder DIR")
    from tqdm import tqdm

    failed = 0
    when = _when(expires)
    bar = tqdm(total=len(work), desc=f"enrol {name}", unit="img", disable=not sys.stderr.isatty())
    for i in range(0, len(work), eng.batch_size):
        chunk = work[i:i + eng.batch_size]
        policy = None if quality == "none" else quality
        for (sid, path), res in zip(chunk, eng.templates([p for _, p in chunk], on_error="return",
                                                          quality=policy)):
            if isinstance(res, MatcherError):
                failed += 1
                click.echo(f"failed: {path}: {type(res).__name__}: {res}", err=True)
            else:
                g.enroll(sid, res, expires_at=when)
        bar.update(len(chunk))
    bar.close()
    st.save(name)
    click.echo(json.dumps({**g.info(), "images": len(work), "failed": failed}))
    sys.exit(2 if failed else 0)


@gallery.command("remove")
@click.argument("name")
@click.argument("subject_ids", nargs=-1, required=True)
@store_options
def gallery_remove(name, subject_ids, store, key_file, require_encryption):
    """Remove subjects (all their templates) from gallery NAME (recorded in the store's audit
    trail)."""
    st = _store(store, key_file, require_encryption)
    done = st.remove(name, list(subject_ids))
    click.echo(json.dumps({"removed": [s for s, d in zip(subject_ids, done) if d],
                           "not_found": [s for s, d in zip(subject_ids, done) if not d]}))


@gallery.command("forget")
@click.argument("subject_id")
@store_options
def gallery_forget(subject_id, store, key_file, require_encryption):
    """Remove SUBJECT_ID from every gallery of the store and record it in the audit trail
    (STORE/audit.jsonl; the subject appears there only as a SHA-256 reference).

    Prints {gallery: templates removed}. Exit status 2 if a gallery could not be opened or saved
    (the others are still done; the audit record says "partial").

    Example: matcher gallery forget --store /var/lib/matcher/galleries PNR-7QK2LM
    """
    st = _store(store, key_file, require_encryption)
    click.echo(json.dumps({"subject_id": subject_id, "removed": st.forget(subject_id)}))


@gallery.command("info")
@click.argument("name", required=False)
@store_options
def gallery_info(name, store, key_file, require_encryption):
    """Show one gallery (or list all of the store)."""
    st = _store(store, key_file, require_encryption)
    for n in [name] if name else st.names():
        click.echo(json.dumps(st.get(n).info()))


@gallery.command("purge")
@click.option("--now", "now_s", help="ISO 8601 time to purge as of (default: now).")
@store_options
def gallery_purge(now_s, store, key_file, require_encryption):
    """Delete expired galleries and expired subjects of the store."""
    st = _store(store, key_file, require_encryption)
    click.echo(json.dumps(st.purge_expired(_when(now_s))))


@main.command()
@click.argument("probe", type=click.Path(dir_okay=False, exists=True))
@click.option("-g", "--gallery", "galleries", multiple=True, required=True,
              help="Gallery to search (repeat to search several as one).")
@click.option("-k", "--top", "k", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--fpir", type=float, default=0.003, show_default=True,
              help="Target false positive identification rate of the decision.")
@click.option("--json", "as_json", is_flag=True)
@store_options
@engine_options
def identify(probe, galleries, k, fpir, as_json, store, key_file, require_encryption, backend,
             precision, threads):
    """Who in the galleries is PROBE? Exit 0 identified, 1 nobody, 2 error.

    Example: matcher identify gate.jpg -g CX880 -g CX881 --fpir 0.003
    """
    eng = engine_from_options(backend, precision, threads)
    st = _store(store, key_file, require_encryption, eng)
    r = st.identify(probe, list(galleries), k, fpir)
    if as_json:
        click.echo(json.dumps({"decision": r.decision, "threshold": r.threshold, "fpir": r.fpir,
                               "gallery_templates": r.gallery_templates,
                               "candidates": [c._asdict() for c in r.candidates]}))
    else:
        click.echo(f"decision: {r.decision or 'nobody'} (threshold {r.threshold:.4f} for FPIR "
                   f"{r.fpir:g} over {r.gallery_templates} templates)")
        for c in r.candidates:
            click.echo(f"  {c.rank:3d}  {c.score:.4f}  {c.subject_id}")
    sys.exit(0 if r.decision else 1)


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

    eng = engine_from_options(backend, precision, threads)
    demo_mod.run(eng, Path(data) if data else None, max_pairs, echo=click.echo)


# Commands that live in their own modules.
from matcher.cli_bench import bench
from matcher.cli_icao import verify_doc
from matcher.cli_quality import erc, quality
from matcher.cli_screen import screen

main.add_command(screen)
main.add_command(bench)
main.add_command(verify_doc, "verify-doc")
main.add_command(erc)
main.add_command(quality)

if __name__ == "__main__":  # pragma: no cover
    main()
