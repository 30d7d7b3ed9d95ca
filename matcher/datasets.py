"""Labelled face data on disk: LFW-style pairs files and ``Person/Person_0001.jpg`` folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from matcher.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2"}

#: Where the shared LFW development split lives, relative to the repository checkout.
LFW_ENV = "MATCHER_LFW_DIR"


def default_lfw_dir() -> Path | None:
    """``$MATCHER_LFW_DIR``, else ``../shared/data/lfw-dev`` from the cwd or the package, if present."""
    env = os.environ.get(LFW_ENV)
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd() / "../shared/data/lfw-dev",
                   Path(__file__).resolve().parents[1] / "../shared/data/lfw-dev"]
    for c in candidates:
        if (c / "pairs.txt").is_file() and (c / "images").is_dir():
            return c.resolve()
    return None


@dataclass(frozen=True)
class Pair:
    a: Path
    b: Path
    genuine: bool
    fold: int


def lfw_image(root: Path, name: str, index: int) -> Path:
    return root / "images" / name / f"{name}_{index:04d}.jpg"


def read_pairs(root: Path, pairs_file: Path | None = None) -> list[Pair]:
    """Parse an LFW View-2 ``pairs.txt`` (first line ``folds<TAB>n``; n genuine then n impostor
    lines per fold)."""
    path = pairs_file or root / "pairs.txt"
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as exc:
        raise InputError(f"cannot read pairs file {path}: {exc}") from exc
    try:
        folds, per = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError):
        raise InputError(f"{path}: first line must be '<folds> <pairs per class>'") from None
    if len(lines) - 1 != folds * 2 * per:
        raise InputError(f"{path}: expected {folds * 2 * per} pairs, found {len(lines) - 1}")
    pairs = []
    for k, parts in enumerate(lines[1:]):
        fold = k // (2 * per)
        try:
            if len(parts) == 3:
                p = Pair(lfw_image(root, parts[0], int(parts[1])),
                         lfw_image(root, parts[0], int(parts[2])), True, fold)
            elif len(parts) == 4:
                p = Pair(lfw_image(root, parts[0], int(parts[1])),
                         lfw_image(root, parts[2], int(parts[3])), False, fold)
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"{path}: malformed line {k + 2}: {' '.join(parts)}") from None
        pairs.append(p)
    return pairs


def labelled_images(root: Path) -> dict[str, list[Path]]:
    """``{person: [image paths]}`` for a folder of ``Person/…`` sub-folders (sorted)."""
    people: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people[d.name] = files
    return people
