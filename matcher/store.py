"""A store directory of named galleries (one per flight or per day), searched together."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matcher.errors import InputError
from matcher.gallery import Candidate, Gallery, Identification, check_time
from matcher.types import Template

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SUFFIX = ".gallery"


class GalleryStore:
    """Galleries saved as ``<root>/<name>.gallery``, opened lazily and kept in memory.

    ``key`` encrypts every gallery written (AES-256-GCM); ``require_encryption`` refuses to open
    or write plaintext galleries. ``engine`` lets galleries take images.
    """

    def __init__(self, root: str | Path, *, key: bytes | None = None,
                 require_encryption: bool = False, engine: Any = None, threads: int = 1) -> None:
        if require_encryption and key is None:
            raise InputError("require_encryption needs a key")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.require_encryption = require_encryption
        self.engine = engine
        self.threads = threads
        self._open: dict[str, Gallery] = {}
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InputError(f"gallery names are 1..128 of [A-Za-z0-9._-], got {name!r}")
        return self.root / f"{name}{SUFFIX}"

    def names(self) -> list[str]:
        """Names of the galleries on disk or open."""
        on_disk = {p.name[: -len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}")}
        return sorted(on_disk | set(self._open))

    def create(self, name: str, model: Any, model_hash: str | None = None, *,
               kind: str = "auto", expires_at: datetime | None = None) -> Gallery:
        """A new, empty gallery (saved at once); ``InputError`` if the name is taken."""
        path = self._path(name)
        with self._lock:
            if name in self._open or path.exists():
                raise InputError(f"gallery {name!r} already exists")
            g = Gallery(model, model_hash, kind=kind, threads=self.threads, name=name,
                        expires_at=expires_at, engine=self.engine)
            g.save(path, key=self.key)
            self._open[name] = g
            return g

    def get(self, name: str) -> Gallery:
        """The open gallery ``name``, loading it on first use."""
        path = self._path(name)
        with self._lock:
            g = self._open.get(name)
            if g is None:
                if not path.exists():
                    raise InputError(f"no gallery named {name!r} in {self.root}")
                g = Gallery.load(path, key=self.key, require_encryption=self.require_encryption,
                                 engine=self.engine, threads=self.threads)
                self._open[name] = g
            return g

    def save(self, name: str) -> None:
        self.get(name).save(self._path(name), key=self.key)

    def delete(self, name: str) -> bool:
        """Delete a gallery from memory and disk; False if it did not exist."""
        path = self._path(name)
        with self._lock:
            existed = self._open.pop(name, None) is not None or path.exists()
            path.unlink(missing_ok=True)
            return existed

    def identify(self, probe: Any, galleries: Sequence[str], k: int = 5,
                 fpir: float | None = 0.003, *, threshold: float | None = None) -> Identification:
        """Search several galleries as one: candidates merged by score, the FPIR threshold set
        for the total number of templates searched. Candidate ids are ``"gallery/subject"``."""
        if not galleries:
            raise InputError("name at least one gallery to search")
        if not isinstance(probe, Template):
            if self.engine is None:
                raise InputError("searching with an image needs GalleryStore(engine=...)")
            probe = self.engine.template(probe)
        gs = [(n, self.get(n)) for n in dict.fromkeys(galleries)]
        total = sum(g.template_count for _, g in gs)
        if threshold is None:
            if fpir is None:
                raise InputError("give fpir or threshold")
            threshold = gs[0][1].threshold_for(fpir, total)
        merged: list[tuple[float, str]] = []
        for n, g in gs:
            r = g.identify(probe, k, None, threshold=threshold)
            merged += [(c.score, f"{n}/{c.subject_id}") for c in r.candidates]
        merged.sort(key=lambda x: (-x[0], x[1]))
        cands = [Candidate(sid, sc, i + 1) for i, (sc, sid) in enumerate(merged[:k])]
        decision = cands[0].subject_id if cands and cands[0].score >= threshold else None
        return Identification(cands, decision, threshold, fpir, total, gs[0][1].model)

    def purge_expired(self, now: datetime | None = None) -> dict[str, Any]:
        """Delete expired galleries and expired subjects (saving what changed)."""
        now = check_time(now, "now") or datetime.now(timezone.utc)
        report: dict[str, Any] = {"galleries": [], "subjects": {}}
        for name in self.names():
            g = self.get(name)
            if g.expires_at is not None and g.expires_at <= now:
                self.delete(name)
                report["galleries"].append(name)
                continue
            gone = g.purge_expired(now)
            if gone:
                self.save(name)
                report["subjects"][name] = gone
        return report
