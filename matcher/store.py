"""A store directory of named galleries (one per flight or per day), searched together.

Privacy operations are recorded in the store's audit trail (``<root>/audit.jsonl`` by default,
:mod:`matcher.audit`): ``forget`` (a subject removed from every gallery), ``remove``, ``delete``
(a whole gallery) and ``purge_expired``. Records name galleries and counts, and subjects only by
:func:`matcher.audit.subject_ref`; never ids in clear, templates or face data.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matcher import audit as audit_trail
from matcher.errors import InputError, MatcherError
from matcher.gallery import Candidate, Gallery, Identification, check_subject_id, check_time
from matcher.types import Template

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SUFFIX = ".gallery"
AUDIT_FILE = "audit.jsonl"


class StoreError(MatcherError):
    """A store-wide operation could not reach every gallery. ``failed`` maps gallery names to
    the reason; the operation was still applied (and saved) everywhere else."""

    def __init__(self, message: str, failed: dict[str, str]) -> None:
        super().__init__(message)
        self.failed = dict(failed)

    @classmethod
    def partial(cls, operation: str, failed: dict[str, str]) -> StoreError:
        """The error of a store-wide ``operation`` done everywhere but the ``failed`` galleries."""
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        return cls(f"{operation} reached all galleries but {sorted(failed)}: {reasons}", failed)


class GalleryStore:
    """Galleries saved as ``<root>/<name>.gallery``, opened lazily and kept in memory.

    ``key`` encrypts every gallery written (AES-256-GCM); ``require_encryption`` refuses to open
    or write plaintext galleries. ``engine`` lets galleries take images. ``audit``: the audit
    trail's path (default ``<root>/audit.jsonl``; ``False``: none).
    """

    def __init__(self, root: str | Path, *, key: bytes | None = None,
                 require_encryption: bool = False, engine: Any = None, threads: int = 1,
                 audit: str | Path | bool | None = None) -> None:
        if require_encryption and key is None:
            raise InputError("require_encryption needs a key")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.audit_path = None if audit is False else \
            self.root / AUDIT_FILE if audit in (None, True) else Path(audit)
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
        g = self.get(name)
        with g._save_lock:  # delete() holds it while unlinking: no save lands after a delete
            if self._open.get(name) is not g:
                raise StoreError(f"gallery {name!r} was deleted while being saved", {name: "deleted"})
            g.save(self._path(name), key=self.key)

    def _audit(self, event: str, fields: dict[str, Any]) -> None:
        if self.audit_path is not None:
            audit_trail.append(self.audit_path, event, {"store": str(self.root.resolve()),
                                                         **fields})

    def delete(self, name: str) -> bool:
        """Delete a gallery from memory and disk (audited); False if it did not exist."""
        path = self._path(name)
        with self._lock:
            g = self._open.get(name)
            existed = g is not None or path.exists()
            with g._save_lock if g is not None else contextlib.nullcontext():
                path.unlink(missing_ok=True)  # first: if it fails, the gallery stays open
                self._open.pop(name, None)
        if existed:
            self._audit("delete_gallery", {"gallery": name})
        return existed

    def remove(self, name: str, subject_ids: Sequence[str]) -> list[bool]:
        """Remove subjects (all their templates) from gallery ``name`` and save it (audited);
        one bool per id, False where it was not enrolled."""
        if isinstance(subject_ids, str):
            raise InputError("subject_ids must be a sequence of ids, not one string")
        subject_ids = [check_subject_id(s) for s in subject_ids]  # all, before changing any
        g = self.get(name)
        done: list[bool] = []
        status = "complete"
        try:
            done.extend(g.remove(sid) for sid in subject_ids)
            if any(done):
                self.save(name)
        except BaseException as exc:
            status = f"failed: {type(exc).__name__}"
            raise
        finally:  # what changed in memory is recorded even if the save failed
            self._audit("remove", {"gallery": name, "status": status, "subjects": [
                {"subject_ref": audit_trail.subject_ref(sid), "removed": d}
                for sid, d in zip(subject_ids, done)]})
        return done

    def forget(self, subject_id: str) -> dict[str, int]:
        """Remove ``subject_id`` from every gallery of the store, saving each gallery changed,
        and record it in the audit trail. Returns ``{gallery: templates removed}`` for the
        galleries that held the subject. A gallery that cannot be opened or saved (corrupt, wrong
        key) does not stop the others: the audit record says ``"partial"`` and
        :class:`StoreError` names it afterwards."""
        if not isinstance(subject_id, str) or not subject_id:
            raise InputError("subject_id must be a non-empty string")
        removed: dict[str, int] = {}
        failed: dict[str, str] = {}
        names = self.names()
        for name in names:
            try:
                g = self.get(name)
                try:
                    n = len(g.subject(subject_id).template_ids)
                except KeyError:  # not enrolled here
                    continue
                if g.remove(subject_id):
                    self.save(name)
                    removed[name] = n
            except (MatcherError, OSError) as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
        self._audit("forget", {"subject_ref": audit_trail.subject_ref(subject_id),
                               "status": "partial" if failed else "complete",
                               "galleries_searched": len(names),
                               "removed": removed, "failed": failed})
        if failed:
            raise StoreError.partial("forget", failed)
        return removed

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
        """Delete expired galleries and expired subjects (saving what changed; audited with
        counts). Returns ``{"galleries": [deleted], "subjects": {gallery: [ids]}}``."""
        now = check_time(now, "now") or datetime.now(timezone.utc)
        report: dict[str, Any] = {"galleries": [], "subjects": {}}
        failed: dict[str, str] = {}
        for name in self.names():
            try:
                g = self.get(name)
                if g.expires_at is not None and g.expires_at <= now:
                    self.delete(name)
                    report["galleries"].append(name)
                    continue
                gone = g.purge_expired(now)
                if gone:
                    report["subjects"][name] = gone
                    self.save(name)
            except (MatcherError, OSError) as exc:  # the others are still purged, then raised
                failed[name] = f"{type(exc).__name__}: {exc}"
        self._audit("purge_expired", {"as_of": now.isoformat(),
                                      "status": "partial" if failed else "complete",
                                      "galleries_deleted": report["galleries"],
                                      "subjects_removed": {k: len(v) for k, v in
                                                           report["subjects"].items()},
                                      "failed": failed})
        if failed:
            raise StoreError.partial("purge_expired", failed)
        return report
