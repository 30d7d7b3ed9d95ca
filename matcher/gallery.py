"""Galleries: enrolled people and their templates, searched 1:N at a stated FPIR.

A :class:`Gallery` holds subjects (stable external string ids, one or more templates each,
JSON metadata, an optional expiry) over a :class:`~matcher.index.VectorIndex`. Several templates of
one subject are fused by their maximum score into one candidate. Searches run concurrently;
enrol, remove and purge take the gallery alone (a readers-writer lock), so a search never sees a
half-enrolled or half-removed subject. The decision threshold for a target FPIR accounts for the
number of templates searched (see :mod:`matcher.calibration`).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from matcher.calibration import calibration_record, fpir_threshold
from matcher.errors import (
    CalibrationError,
    GalleryFileError,
    InputError,
    MatcherError,
    ModelMismatchError,
    TemplateError,
)
from matcher.index import VectorIndex
from matcher.rwlock import RWLock
from matcher.types import Template

#: Subject ids: 1..128 visible characters (no whitespace at the ends), e.g. "TOKEN-123".
_SUBJECT_ID = re.compile(r"[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,126}[^\s\x00-\x1f\x7f])?")
MAX_METADATA_BYTES = 16 * 1024
MAX_TEMPLATES_PER_SUBJECT = 32
MAX_K = 1000


class Candidate(NamedTuple):
    """One subject in a candidate list: best template score, rank 1 = best."""

    subject_id: str
    score: float
    rank: int


class Identification(NamedTuple):
    """Result of a 1:N search: ``decision`` is the top subject if its score reaches
    ``threshold`` (set for ``fpir`` at ``gallery_templates``), else ``None``. Immutable."""

    candidates: list[Candidate]
    decision: str | None
    threshold: float
    fpir: float | None
    gallery_templates: int
    model: str


@dataclass
class Subject:
    """An enrolled person. ``template_ids`` key their templates in the index."""

    id: str
    template_ids: list[int]
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    enrolled_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "template_ids": self.template_ids, "metadata": self.metadata,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "enrolled_at": self.enrolled_at.isoformat()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subject:
        return cls(id=d["id"], template_ids=[int(t) for t in d["template_ids"]],
                   metadata=d.get("metadata") or {},
                   expires_at=_parse_time(d.get("expires_at")),
                   enrolled_at=_parse_time(d["enrolled_at"]) or datetime.now(timezone.utc))


def _parse_time(v: str | None) -> datetime | None:
    """An ISO time from a gallery file; naive times are refused (every time here is UTC-aware)."""
    if not v:
        return None
    t = datetime.fromisoformat(v)
    if t.tzinfo is None:
        raise ValueError(f"time {v[:40]!r} has no time zone")
    return t


def check_subject_id(subject_id: object) -> str:
    if not isinstance(subject_id, str) or not _SUBJECT_ID.fullmatch(subject_id):
        raise InputError(f"subject id must be 1..128 printable characters without surrounding "
                         f"whitespace, got {subject_id!r}")
    return subject_id


def check_time(t: datetime | None, what: str) -> datetime | None:
    if t is None:
        return None
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise InputError(f"{what} must be a timezone-aware datetime, got {t!r}")
    return t


def check_search_args(k: object, fpir: float | None, threshold: float | None) -> None:
    """Validate a search's ``k`` and its operating point (``fpir`` or ``threshold``)."""
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an int in 1..{MAX_K}, got {k!r}")
    if threshold is None and fpir is None:
        raise InputError("give fpir or threshold")
    if threshold is not None and not (isinstance(threshold, (int, float))
                                      and math.isfinite(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold!r}")


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        size = len(json.dumps(metadata, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata must be JSON-serialisable: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InputError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return json.loads(json.dumps(metadata))  # a private deep copy


def is_vector(x: Any) -> bool:
    """One embedding row (a 1-D float array), not an image."""
    return isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype != np.uint8


def _check_loaded_subject(subj: Subject, g: Gallery) -> None:
    """A subject record read from a file is what enroll() could have made (raises ValueError)."""
    check_subject_id(subj.id)
    check_metadata(subj.metadata)
    if subj.id in g._subjects:
        raise ValueError(f"subject {subj.id!r} appears twice")
    if not 1 <= len(subj.template_ids) <= MAX_TEMPLATES_PER_SUBJECT:
        raise ValueError(f"subject {subj.id!r} has {len(subj.template_ids)} templates")
    for t in subj.template_ids:
        if t in g._owner or not 0 <= t < g._next_tid:
            raise ValueError(f"template id {t} is claimed twice or out of range")
    if subj.enrolled_at.tzinfo is None:
        raise ValueError(f"subject {subj.id!r} has a naive enrolment time")


class Gallery:
    """An in-process gallery of enrolled subjects, searched with FAISS / native kernels.

    ``model`` is an :class:`~matcher.Engine` (which also lets you enrol and search with images),
    or a model id; ``model_hash`` then binds the gallery to one pipeline (when omitted, the first
    enrolled template binds it). ``kind`` chooses the index: ``"auto"``, ``"flat"``, ``"hnsw"``,
    ``"ivf"`` or a FAISS index-factory string. ``threads`` caps FAISS's OpenMP threads per search.
    """

    def __init__(self, model: Any, model_hash: str | None = None, *, kind: str = "auto",
                 threads: int = 1, name: str = "", expires_at: datetime | None = None,
                 dim: int | None = None, engine: Any = None) -> None:
        if hasattr(model, "model") and hasattr(model, "model_hash"):  # an Engine
            engine, model_hash, model = model, model.model_hash, model.model
        if not isinstance(model, str) or not model:
            raise InputError("model must be an Engine or a model id string")
        self.model = model
        self.model_hash = model_hash
        self.engine = engine
        self.name = name
        self.expires_at = check_time(expires_at, "expires_at")
        self.kind = kind
        self.threads = threads
        self._dim = dim or (engine.recognizer.dim if engine is not None else None)
        self._index: VectorIndex | None = None
        self._subjects: dict[str, Subject] = {}
        self._owner: dict[int, str] = {}  # template id -> subject id
        self._next_tid = 0
        self._max_per = 1  # upper bound on templates per subject (not lowered by removals)
        self._lock = RWLock()
        self._save_lock = threading.RLock()  # see save()
        self._thresholds: dict[tuple[float, int], float] = {}
        self._record: dict[str, Any] | None = None

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._subjects)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._subjects

    @property
    def dim(self) -> int | None:
        """Template dimension (None until the first template is enrolled)."""
        return self._dim

    @property
    def template_count(self) -> int:
        return len(self._owner)

    def subject(self, subject_id: str) -> Subject:
        """A copy of the subject's record (``KeyError`` if not enrolled)."""
        with self._lock.read():
            s = self._subjects[subject_id]
            return Subject(s.id, list(s.template_ids), json.loads(json.dumps(s.metadata)),
                           s.expires_at, s.enrolled_at)

    def subject_ids(self) -> list[str]:
        with self._lock.read():
            return list(self._subjects)

    def info(self) -> dict[str, Any]:
        with self._lock.read():
            return {"name": self.name, "model": self.model, "model_hash": self.model_hash,
                    "subjects": len(self._subjects), "templates": len(self._owner),
                    "index": self._index.kind_in_use if self._index is not None else None,
                    "kind": self.kind,
                    "memory_bytes": self._index.memory_bytes() if self._index is not None else 0,
                    "expires_at": self.expires_at.isoformat() if self.expires_at else None}

    # ------------------------------------------------------------------ inputs
    def _as_vectors(self, samples: Any, quality: Any = None) -> np.ndarray:
        """Unit float32 rows for templates / images / a vector array, checked against the model."""
        if isinstance(samples, np.ndarray) and samples.dtype != np.uint8:
            if samples.dtype.kind != "f":
                raise InputError(f"vectors must be floating point, got dtype {samples.dtype}")
            v = np.asarray(samples, dtype=np.float32)
            if v.ndim == 1:
                v = v[None, :]
            if v.ndim != 2 or v.shape[0] == 0:
                raise InputError(f"vectors must be (n, dim), got shape {samples.shape}")
            if self.model_hash is None:
                raise InputError("bind the gallery to a model hash before enrolling raw vectors")
            if not np.all(np.isfinite(v)):
                raise TemplateError("vectors have NaN or infinite values")
            norms = np.linalg.norm(v.astype(np.float64), axis=1)
            if np.any(np.abs(norms - 1.0) > 1e-2):
                raise TemplateError("vectors must have unit length")
            return np.ascontiguousarray(v / norms[:, None].astype(np.float32), dtype=np.float32)
        items = list(samples) if isinstance(samples, (list, tuple)) else [samples]
        if not items:
            raise InputError("nothing to enrol")
        images = [x for x in items if not isinstance(x, Template)]
        if images:
            if self.engine is None:
                raise InputError("enrolling or searching with images needs Gallery(engine)")
            made = iter(self.engine.templates(images, quality=quality))
            items = [x if isinstance(x, Template) else next(made) for x in items]
        for t in items:
            self._check_template(t)
        if len({t.model_hash for t in items}) > 1:
            raise ModelMismatchError("templates of different model hashes in one enrolment")
        dims = {t.vector.shape for t in items}
        if len(dims) > 1 or (self._dim is not None and dims != {(self._dim,)}):
            raise TemplateError(f"templates of shapes {sorted(dims)}; this gallery holds "
                                f"{self._dim}-d templates")
        return np.stack([t.vector for t in items])

    def _check_template(self, t: Template) -> None:
        if t.model != self.model or (self.model_hash is not None and t.model_hash != self.model_hash):
            raise ModelMismatchError(f"template is from {t.model}#{t.model_hash}; this gallery holds "
                                     f"{self.model}#{self.model_hash}")

    def _bind(self, vectors: np.ndarray, model_hash: str | None) -> None:
        """Bind an unbound gallery to the first enrolment's model hash (under the write lock)."""
        if self.model_hash is None:
            self.model_hash = model_hash
        elif model_hash is not None and model_hash != self.model_hash:  # raced another first enrol
            raise ModelMismatchError(f"templates are from {self.model}#{model_hash}; this gallery "
                                     f"holds {self.model}#{self.model_hash}")
        if self._dim is None:
            self._dim = int(vectors.shape[1])
        if vectors.shape[1] != self._dim:
            raise TemplateError(f"vectors have dim {vectors.shape[1]}, the gallery {self._dim}")
        if self._index is None:
            self._index = VectorIndex(self._dim, self.kind, threads=self.threads)

    # ------------------------------------------------------------------ enrolment
    def enroll(self, subject_id: str, samples: Any, *, metadata: dict[str, Any] | None = None,
               expires_at: datetime | None = None, replace: bool = False,
               quality: Any = "enrol") -> int:
        """Enrol (or add templates to) ``subject_id`` from a template, an image, or a list of
        them, or an ``(n, dim)`` array of unit vectors. Returns the subject's template count.

        Images must pass the ``quality`` policy (default: the card's strict "enrol" policy;
        ``None`` skips the check) or :class:`~matcher.errors.QualityError` is raised: a bad
        enrolment photo would poison every later search."""
        check_subject_id(subject_id)
        meta = check_metadata(metadata)
        check_time(expires_at, "expires_at")
        first_hash = samples.model_hash if isinstance(samples, Template) else (
            samples[0].model_hash if isinstance(samples, (list, tuple)) and samples
            and isinstance(samples[0], Template) else None)
        vectors = self._as_vectors(samples, quality)
        with self._lock.write():
            self._bind(vectors, first_hash or (self.engine.model_hash if self.engine else None))
            old = self._subjects.get(subject_id)
            keep = [] if (old is None or replace) else old.template_ids
            if len(keep) + len(vectors) > MAX_TEMPLATES_PER_SUBJECT:
                raise InputError(f"{subject_id}: at most {MAX_TEMPLATES_PER_SUBJECT} templates "
                                 "per subject")
            tids = list(range(self._next_tid, self._next_tid + len(vectors)))
            self._index.add(np.asarray(tids, dtype=np.int64), vectors)
            self._next_tid += len(vectors)
            if old is not None and replace:
                self._drop_templates(old.template_ids)
            subj = Subject(subject_id, keep + tids,
                           meta if (metadata is not None or old is None) else old.metadata,
                           expires_at if (expires_at is not None or old is None) else old.expires_at)
            if old is not None and not replace:
                subj.enrolled_at = old.enrolled_at
            self._subjects[subject_id] = subj
            self._max_per = max(self._max_per, len(subj.template_ids))
            for t in tids:
                self._owner[t] = subject_id
            self._thresholds.clear()
            return len(subj.template_ids)

    def enroll_many(self, subject_ids: Sequence[str], samples: Sequence[Template] | np.ndarray, *,
                    expires_at: datetime | None = None) -> int:
        """Bulk enrolment: ``subject_ids[i]`` gets ``samples[i]`` (templates or unit-vector rows).
        Repeated ids give a subject several templates. Returns the number of templates added."""
        ids = [check_subject_id(s) for s in subject_ids]
        check_time(expires_at, "expires_at")
        if isinstance(samples, np.ndarray):
            vectors = self._as_vectors(samples)
            first_hash = None
        else:
            samples = list(samples)
            for t in samples:
                if not isinstance(t, Template):
                    raise InputError("enroll_many takes templates or a vector array")
            vectors = self._as_vectors(samples) if samples else np.empty((0, 0))
            first_hash = samples[0].model_hash if samples else None
        if len(ids) != len(vectors):
            raise InputError(f"{len(ids)} ids for {len(vectors)} samples")
        if not ids:
            return 0
        with self._lock.write():
            self._bind(vectors, first_hash)
            counts: dict[str, int] = {}
            for s in ids:
                counts[s] = counts.get(s, 0) + 1
            for s, c in counts.items():
                have = len(self._subjects[s].template_ids) if s in self._subjects else 0
                if have + c > MAX_TEMPLATES_PER_SUBJECT:
                    raise InputError(f"{s}: at most {MAX_TEMPLATES_PER_SUBJECT} templates per subject")
            start = self._next_tid
            tids = np.arange(start, start + len(ids), dtype=np.int64)
            self._index.add(tids, vectors)
            self._next_tid += len(ids)
            now = datetime.now(timezone.utc)
            for s, t in zip(ids, tids.tolist()):
                subj = self._subjects.get(s)
                if subj is None:
                    subj = self._subjects[s] = Subject(s, [], {}, expires_at, now)
                subj.template_ids.append(t)
                self._max_per = max(self._max_per, len(subj.template_ids))
                self._owner[t] = s
            self._thresholds.clear()
            return len(ids)

    def _drop_templates(self, tids: Iterable[int]) -> None:
        tids = list(tids)
        if tids:
            self._index.remove(np.asarray(tids, dtype=np.int64))
        for t in tids:
            self._owner.pop(t, None)

    def remove(self, subject_id: str) -> bool:
        """Remove a subject and all its templates from the index; False if not enrolled."""
        with self._lock.write():
            subj = self._subjects.pop(subject_id, None)
            if subj is None:
                return False
            self._drop_templates(subj.template_ids)
            self._thresholds.clear()
            return True

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Remove every subject whose expiry is at or before ``now``; return their ids, sorted."""
        now = check_time(now, "now") or datetime.now(timezone.utc)
        with self._lock.write():
            gone = sorted(s.id for s in self._subjects.values()
                          if s.expires_at is not None and s.expires_at <= now)
            for sid in gone:
                self._drop_templates(self._subjects.pop(sid).template_ids)
            if gone:
                self._thresholds.clear()
            return gone

    # ------------------------------------------------------------------ search
    def threshold_for(self, fpir: float, n_templates: int | None = None) -> float:
        """Decision threshold for ``fpir`` at ``n_templates`` (default: this gallery's)."""
        n = self.template_count if n_templates is None else n_templates
        key = (fpir, n)
        t = self._thresholds.get(key)
        if t is None:
            if self._record is None:
                from matcher.models.cards import load_card

                try:
                    record = calibration_record(load_card(self.model), self.model_hash or "")
                except MatcherError:  # no card for this model id
                    record = None
                if not record:
                    raise CalibrationError(f"no calibration for {self.model}#{self.model_hash}; "
                                           "pass threshold= or run `matcher calibrate`")
                self._record = record
            t = fpir_threshold(self._record, fpir, n)
            self._thresholds[key] = t
        return t

    def identify(self, probe: Any, k: int = 5, fpir: float | None = 0.003, *,
                 threshold: float | None = None) -> Identification:
        """Top-``k`` subjects for ``probe`` (a template, one unit vector or, with an engine, an
        image) and the decision at ``fpir`` (or at an explicit ``threshold``)."""
        if type(probe) is Template:  # the gate's hot path: no list, no stacking
            if probe._key != (self.model, self.model_hash):
                self._check_template(probe)
            return self._search(probe.vector.reshape(1, -1), k, fpir, threshold)[0]
        one = probe if is_vector(probe) else [probe]
        return self.identify_many(one, k, fpir, threshold=threshold)[0]

    def identify_many(self, probes: Any, k: int = 5, fpir: float | None = 0.003, *,
                      threshold: float | None = None) -> list[Identification]:
        """:meth:`identify` for a batch of probes (templates, images, or unit-vector rows),
        searched together."""
        return self._search(self._as_vectors(probes), k, fpir, threshold)

    def _search(self, q: np.ndarray, k: int, fpir: float | None,
                threshold: float | None) -> list[Identification]:
        check_search_args(k, fpir, threshold)
        lock = self._lock
        lock.acquire_read()
        try:
            n = len(self._owner)
            t = float(threshold) if threshold is not None else self.threshold_for(fpir, n)
            if n == 0:
                return [Identification([], None, t, fpir if threshold is None else None, 0,
                                       self.model) for _ in range(len(q))]
            if q.shape[1] != self._dim:
                raise TemplateError(f"probe dim {q.shape[1]} != gallery dim {self._dim}")
            # Walking templates best-first, k distinct subjects appear within (k-1)*m + 1 of them
            # (m = most templates of one subject), so k*m candidates make the fusion exact; one
            # more shows whether a tie with the last of them runs on (see _fuse).
            kk = min(n, k * self._max_per + 1)
            scores, tids = self._index.search(q, kk)
            rescore = self._max_per > 1 and self._index.kind_in_use != "flat"
            limit = 2 * k if rescore else k
            out = []
            for i, (row_s, row_t) in enumerate(zip(scores.tolist(), tids.tolist())):
                cands = self._fuse(row_s, row_t, limit, kk == n)
                if cands is None:  # a tie runs past the fetched templates: fetch them all
                    s_all, t_all = self._index.search(q[i:i + 1], n)
                    cands = self._fuse(s_all[0].tolist(), t_all[0].tolist(), limit, True)
                if rescore:  # an approximate index may have missed a candidate's best template
                    cands = self._rescore(cands, q[i], k)
                decision = cands[0].subject_id if cands and cands[0].score >= t else None
                out.append(Identification(cands, decision, t, fpir if threshold is None else None,
                                          n, self.model))
            return out
        finally:
            lock.release_read()

    def _fuse(self, row_s: list[float], row_t: list[int], limit: int, complete: bool
              ) -> list[Candidate] | None:
        """The best ``limit`` distinct subjects of one best-first search row (a subject scores
        its best template). Equal scores rank by subject id, so the answer does not depend on
        storage order (and a ShardedGallery's merge gives the same one). None if subjects tied
        with the last one may lie beyond the row (unless ``complete``: the row is everything)."""
        owner = self._owner
        best: list[tuple[float, str]] = []
        seen: set[str] = set()
        last = 2.0  # above any score
        tied = False
        for sc, tid in zip(row_s, row_t):
            if tid < 0:
                break
            if sc > 1.0:  # float rounding of a unit dot product; clamped before comparing
                sc = 1.0
            elif sc < -1.0:
                sc = -1.0
            if sc < last and len(best) >= limit:
                break
            sid = owner[tid]
            if sid not in seen:
                seen.add(sid)
                tied = tied or sc == last
                best.append((sc, sid))
                last = sc
        else:
            if not complete and len(best) >= limit:  # every template after the limit tied
                return None
        if tied:
            best.sort(key=lambda c: (-c[0], c[1]))
        return [Candidate(sid, sc, r + 1) for r, (sc, sid) in enumerate(best[:limit])]

    def _rescore(self, cands: list[Candidate], q: np.ndarray, k: int) -> list[Candidate]:
        """Exact fused (max) scores over every template of each candidate subject, re-ranked."""
        exact = []
        for c in cands:
            vecs = self._index.vectors_of(np.asarray(self._subjects[c.subject_id].template_ids,
                                                     dtype=np.int64))
            exact.append((min(1.0, max(-1.0, float(np.max(vecs @ q)))), c.subject_id))
        exact.sort(key=lambda x: (-x[0], x[1]))
        return [Candidate(sid, sc, i + 1) for i, (sc, sid) in enumerate(exact[:k])]

    # ------------------------------------------------------------------ persistence
    def to_bytes(self, key: bytes | None = None) -> bytes:
        """The gallery as file bytes (see :mod:`matcher.gallery_file`); encrypted with ``key``."""
        from matcher import gallery_file

        with self._lock.read():
            meta = {"format": "matcher-gallery", "model": self.model,
                    "model_hash": self.model_hash, "name": self.name, "kind": self.kind,
                    "dim": self._dim, "next_template_id": self._next_tid,
                    "max_per_subject": self._max_per,
                    "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                    "subjects": [s.to_json() for s in self._subjects.values()]}
            index = self._index.to_bytes() if self._index is not None else b""
        return gallery_file.pack(meta, index, key)

    def save(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the old or the new file."""
        from matcher import gallery_file

        with self._save_lock:  # snapshot and write in one step: saves land in call order
            gallery_file.write_atomic(Path(path), self.to_bytes(key))

    @classmethod
    def from_bytes(cls, data: bytes, *, key: bytes | None = None, require_encryption: bool = False,
                   engine: Any = None, threads: int = 1) -> Gallery:
        """Rebuild a gallery from :meth:`to_bytes` output, checking every part."""
        from matcher import gallery_file

        meta, index_bytes = gallery_file.unpack(data, key, require_encryption=require_encryption)
        try:
            g = cls(meta["model"], meta["model_hash"], kind=meta["kind"], threads=threads,
                    name=meta.get("name", ""), expires_at=_parse_time(meta.get("expires_at")),
                    dim=meta.get("dim"), engine=None)
            g.engine = engine
            if engine is not None and (engine.model, engine.model_hash) != (g.model, g.model_hash):
                raise ModelMismatchError(f"gallery holds {g.model}#{g.model_hash}, the engine is "
                                         f"{engine.model}#{engine.model_hash}")
            g._next_tid = int(meta["next_template_id"])
            for d in meta["subjects"]:
                subj = Subject.from_json(d)
                _check_loaded_subject(subj, g)
                g._subjects[subj.id] = subj
                for t in subj.template_ids:
                    g._owner[t] = subj.id
            # Derived, not trusted: a forged max_per_subject would make searches drop subjects.
            g._max_per = max((len(s.template_ids) for s in g._subjects.values()), default=1)
            if index_bytes:
                g._index = VectorIndex.from_bytes(index_bytes, threads=threads)
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise GalleryFileError(f"gallery metadata is inconsistent: {exc}") from None
        n_index = len(g._index) if g._index is not None else 0
        owned = np.fromiter(g._owner, np.int64, count=len(g._owner))
        if n_index != len(owned) or (n_index and not np.array_equal(
                np.sort(owned), np.sort(g._index.ids()))):
            raise GalleryFileError(f"gallery index holds {n_index} templates, its subjects "
                                   f"{len(owned)}, or other ids")
        if g._index is not None and g._dim != g._index.dim:
            raise GalleryFileError("gallery metadata does not match its index dimension")
        return g

    @classmethod
    def load(cls, path: str | Path, *, key: bytes | None = None, require_encryption: bool = False,
             engine: Any = None, threads: int = 1) -> Gallery:
        """Open a saved gallery; truncated, tampered or wrong-key files raise typed errors."""
        from matcher import gallery_file

        return cls.from_bytes(gallery_file.read(Path(path)), key=key,
                              require_encryption=require_encryption, engine=engine,
                              threads=threads)
