"""A gallery sharded over Ray actors: the same 1:N answers as one :class:`~matcher.Gallery`.

:class:`ShardedGallery` splits subjects over ``shards`` Ray actors, each holding an ordinary
:class:`~matcher.gallery.Gallery`. A subject lives on exactly one shard, chosen by a stable hash
of its id (BLAKE2b of the UTF-8 id modulo the shard count), so every template of a subject is
fused on one shard. A search fans out to every shard; each returns its top-``k`` fused
candidates, the driver merges them (the global top-``k`` subjects are among the union of the
per-shard top-``k``) and decides with the FPIR threshold for the *whole* gallery (the sum of the
shard template counts). With exact indexes (``kind="flat"``, or ``"auto"`` while every shard and
the single gallery it is compared with stay at or below 1,000,000 templates) candidates, scores and
decisions equal a single-process gallery holding the same data.

Templates and unit-vector rows only: no images. Turn images into templates with an
:class:`~matcher.Engine` on the caller's side (an Engine may be passed as ``model``; only its
model id and hash are used).

A shard actor that dies is reported as :class:`ShardError` naming the shard; no partial answer is
ever returned. :meth:`ShardedGallery.restart_shard` recreates it from the last :meth:`save` /
:meth:`load` directory (changes to that shard since then are lost). ``save`` has every shard write
its own file, so on a multi-node cluster the directory must be on a filesystem every node sees.

Ray is optional: ``pip install 'matcher[ray]'``. ``import matcher`` never imports Ray.

Ray puts the driver's working directory first on its workers' ``sys.path``: start the driver
outside a matcher source checkout (or use an editable install there), or the workers import the
uncompiled source tree instead of the installed package and the shard actors die at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

try:
    import ray
    import ray.exceptions as _rex
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("matcher.distributed needs Ray: pip install 'matcher[ray]'") from exc

from matcher.errors import InputError, MatcherError, ModelMismatchError
from matcher.gallery import (
    Candidate,
    Gallery,
    Identification,
    check_metadata,
    check_search_args,
    check_subject_id,
    check_time,
    is_vector,
)
from matcher.types import Template

MANIFEST = "manifest.json"
#: Probes per fan-out of identify_many. An exact scan of 10^7 templates per shard takes ~0.2 s
#: per single probe on one core (SCALING.md; batches are faster per probe), so a chunk takes at
#: most ~13 s, well inside the default 30 s search_timeout; and a chunk is still a batch.
SEARCH_CHUNK = 64
_FORMAT = "matcher-sharded-gallery"
#: Errors meaning the actor process is gone (or unreachable) rather than that a call failed.
_DEAD = tuple(e for e in (getattr(_rex, "RayActorError", None),
                          getattr(_rex, "ActorDiedError", None),
                          getattr(_rex, "ActorUnavailableError", None)) if e is not None)


class ShardError(MatcherError):
    """A shard actor died or is unreachable. ``.shards`` lists the shard numbers concerned."""

    def __init__(self, message: str, shards: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.shards = list(shards)


class ClusterError(MatcherError):
    """The Ray cluster could not be started or joined (bad address, no cluster running)."""


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:port", a GCS address; "local":
    start one on this machine's cores; None: Ray's default) unless Ray is initialised already.
    Returns True if this call started or joined it (the caller may ``ray.shutdown()`` when done).

    Refuses (:class:`InputError`) to start from a directory holding a different ``matcher``
    source tree: Ray puts the driver's working directory first on its workers' ``sys.path``, so
    the workers would import that tree (without its compiled modules) instead of this one."""
    import matcher

    here = Path.cwd() / "matcher"
    if (here / "__init__.py").is_file() and \
            here.resolve() != Path(matcher.__file__).parent.resolve():
        raise InputError(f"cannot use Ray from {Path.cwd()}: it holds a matcher source tree that "
                         "Ray workers would import instead of the installed package; run from "
                         "another directory (or install the checkout with pip install -e)")
    if ray.is_initialized():
        return False
    if address is not None and (not isinstance(address, str) or not address):
        raise InputError(f"ray_address must be 'local', 'auto', 'ray://host:port', a cluster "
                         f"address or None, got {address!r}")
    try:
        if address == "local":
            from matcher.backends import available_cores

            ray.init(num_cpus=available_cores(), include_dashboard=False)
        else:  # None: Ray's default (RAY_ADDRESS if set, else a new local cluster)
            ray.init(address=address)
    except (ValueError, ConnectionError, TimeoutError, RuntimeError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: "
                           f"{type(exc).__name__}: {exc}".splitlines()[0][:500]) from None
    return True


def shard_of(subject_id: str, shards: int) -> int:
    """The shard holding ``subject_id``: stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(subject_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_file(i: int, generation: str = "") -> str:
    """File name of shard ``i`` in a save of the given generation ("" for version-1 saves)."""
    return f"shard-{i:04d}{'.' + generation if generation else ''}.gallery"


#: actor_options that would let Ray restart a shard by itself: a restarted actor re-runs its
#: constructor and would come back empty (or from an older save), answering without error.
_RESTART_OPTIONS = ("max_restarts", "max_task_retries")


@ray.remote
class _Shard:
    """One shard: an in-process Gallery inside a Ray actor."""

    def __init__(self, model: str, model_hash: str | None, kind: str, threads: int,
                 path: str | None = None, key: bytes | None = None) -> None:
        if path is not None:
            self.g = Gallery.load(path, key=key, require_encryption=key is not None,
                                  threads=threads)
        else:
            self.g = Gallery(model, model_hash, kind=kind, threads=threads)

    def bind(self, model_hash: str) -> None:
        if self.g.model_hash is None:
            self.g.model_hash = model_hash

    # samples: Template objects or unit-vector rows, exactly as the caller gave them, so the
    # shard's Gallery treats them as a single Gallery would (templates are not renormalised).
    def enroll(self, subject_id: str, samples: Any, metadata: dict | None,
               expires_at: datetime | None, replace: bool) -> int:
        return self.g.enroll(subject_id, samples, metadata=metadata, expires_at=expires_at,
                             replace=replace)

    def enroll_many(self, ids: list[str], samples: Any, expires_at: datetime | None) -> int:
        return self.g.enroll_many(ids, samples, expires_at=expires_at)

    def remove(self, subject_id: str) -> bool:
        return self.g.remove(subject_id)

    def purge_expired(self, now: datetime | None) -> list[str]:
        return self.g.purge_expired(now)

    def search(self, q: Any, k: int) -> tuple[int, list[list[tuple[str, float]]]]:
        """(templates searched, per probe [(subject id, fused score)] best first)."""
        # The threshold only sets the shard's own decision, which the driver ignores.
        res = self.g.identify_many(q, k, None, threshold=1.0)
        n = res[0].gallery_templates if res else self.g.template_count
        return n, [[(c.subject_id, c.score) for c in r.candidates] for r in res]

    def template_count(self) -> int:
        return self.g.template_count

    def info(self) -> dict[str, Any]:
        return self.g.info()

    def save(self, path: str, key: bytes | None) -> int:
        self.g.save(path, key=key)
        return self.g.template_count


def _init_error(exc: BaseException) -> MatcherError | None:
    """The MatcherError a shard's constructor raised, if that is why its actor is dead."""
    if not getattr(exc, "actor_init_failed", False):
        return None
    # Ray 2.60: the creation task's RayTaskError is args[0]; its .cause is the error raised
    for wrapped in (getattr(exc, "cause", None), *exc.args):
        for c in (wrapped, getattr(wrapped, "cause", None)):
            if isinstance(c, MatcherError):
                return c
    return None


class ShardedGallery:
    """A gallery split over ``shards`` Ray actors, searched as one (see the module docstring).

    ``model`` is a model id (or an Engine, of which only the id and hash are kept); ``model_hash``
    binds the gallery to one pipeline (when omitted, the first enrolled templates bind it).
    ``ray_address`` is passed to ``ray.init`` if Ray is not initialised yet. ``kind`` and
    ``threads`` are each shard's index kind and FAISS threads. ``actor_options`` go to
    ``_Shard.options`` (e.g. ``{"num_cpus": 1, "max_concurrency": 4}``). ``search_timeout``
    (identify) and ``timeout`` (every other call: enrol, save, load...) bound, in seconds, how
    long the driver waits for the shards; a shard that does not answer in time is a
    :class:`ShardError` like a dead one (a write it was doing may still complete).
    Accepts :class:`~matcher.Template` objects and ``(n, dim)`` unit-vector arrays, never images.
    """

    def __init__(self, model: Any, model_hash: str | None = None, *, shards: int,
                 ray_address: str | None = None, kind: str = "auto", threads: int = 1,
                 actor_options: dict[str, Any] | None = None, search_timeout: float = 30.0,
                 timeout: float = 600.0,
                 _load_dir: Path | None = None, _key: bytes | None = None,
                 _files: Sequence[str] | None = None) -> None:
        if hasattr(model, "model") and hasattr(model, "model_hash"):  # an Engine
            model, model_hash = model.model, model_hash or model.model_hash
        if not isinstance(model, str) or not model:
            raise InputError("model must be an Engine or a model id string")
        if type(shards) is not int or shards < 1:
            raise InputError(f"shards must be a positive int, got {shards!r}")
        for name, value in (("search_timeout", search_timeout), ("timeout", timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{name} must be a positive number of seconds, got {value!r}")
        self.search_timeout, self.timeout = float(search_timeout), float(timeout)
        refused = [o for o in _RESTART_OPTIONS if o in (actor_options or {})]
        if refused:
            raise InputError(f"actor_options {refused} are not allowed: a shard Ray restarts by "
                             "itself comes back without its templates; use restart_shard(i)")
        connect(ray_address)
        self.model = model
        self.model_hash = model_hash
        self.kind = kind
        self.threads = threads
        self.shards = shards
        self._actor_options = dict(actor_options or {})
        self._saved: Path | None = _load_dir
        self._files: list[str] = list(_files or [])
        self._key = _key
        self._calib: Gallery | None = None
        self._closed = False
        self._bind_lock = threading.Lock()
        self._actors = [self._new_actor(i) for i in range(shards)]

    # ------------------------------------------------------------------ actors
    def _new_actor(self, i: int) -> Any:
        path = str(self._saved / self._files[i]) if self._saved is not None else None
        cls = _Shard.options(**self._actor_options) if self._actor_options else _Shard
        return cls.remote(self.model, self.model_hash, self.kind, self.threads, path, self._key)

    def _gather(self, refs: Sequence[tuple[int, Any]], timeout: float | None = None
                ) -> list[Any]:
        """``ray.get`` each (shard, ref) within ``timeout`` s in all (default ``self.timeout``);
        dead or silent shards become one :class:`ShardError` naming them all, a shard's own
        MatcherError is re-raised as itself."""
        if self._closed:
            raise InputError("this ShardedGallery is closed")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        out, dead, why = [], [], []
        for i, ref in refs:
            try:
                out.append(ray.get(ref, timeout=max(0.0, deadline - time.monotonic())))
            except _rex.GetTimeoutError:
                dead.append(i)
                why.append(f"no answer within {limit:g} s")
                out.append(None)
            except _DEAD as exc:
                cause = _init_error(exc)
                if cause is not None:  # the shard's constructor failed: its file, its key
                    try:
                        named = type(cause)(f"shard {i}: {cause}")
                    except TypeError:  # an error class with another signature
                        named = cause
                    raise named from None
                dead.append(i)
                why.append(type(exc).__name__)
                out.append(None)
            except _rex.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, MatcherError):
                    raise cause from None
                raise
        if dead:
            names = ", ".join(f"shard {i} of {self.shards} ({w})" for i, w in zip(dead, why))
            raise ShardError(f"{names} is not available: its actor died, hangs or cannot be "
                             "reached; call restart_shard(i) to reload it from the last save",
                             dead)
        return out

    def _all(self, method: str, *args: Any, timeout: float | None = None) -> list[Any]:
        return self._gather([(i, getattr(a, method).remote(*args))
                             for i, a in enumerate(self._actors)], timeout)

    def restart_shard(self, i: int) -> None:
        """Replace shard ``i``'s actor by a new one loaded from the last save / load directory
        (what was enrolled on that shard since is lost; re-enrol it). ``ShardError`` if the
        gallery was never saved or loaded."""
        if type(i) is not int or not 0 <= i < self.shards:
            raise InputError(f"shard must be an int in 0..{self.shards - 1}, got {i!r}")
        if self._saved is None:
            raise ShardError(f"shard {i}: nothing to restart from; save() the gallery first", [i])
        with contextlib.suppress(Exception):  # the actor may be gone already
            ray.kill(self._actors[i], no_restart=True)
        self._actors[i] = self._new_actor(i)
        self._gather([(i, self._actors[i].template_count.remote())])  # wait until it is up

    def shard_of(self, subject_id: str) -> int:
        return shard_of(check_subject_id(subject_id), self.shards)

    # ------------------------------------------------------------------ inputs
    def _vectors(self, samples: Any) -> tuple[Any, str | None]:
        """The samples to ship (float32 rows, or the list of Templates as given, which the
        shards' Galleries treat as one Gallery would) and the templates' model hash (None for
        raw vectors)."""
        if isinstance(samples, np.ndarray):
            if samples.dtype == np.uint8:
                raise InputError("ShardedGallery takes templates or unit vectors, not images")
            if self.model_hash is None:
                raise InputError("bind the gallery to a model hash before enrolling raw vectors")
            v = np.asarray(samples, dtype=np.float32)
            if v.ndim == 1:
                v = v[None, :]
            if v.ndim != 2 or v.shape[0] == 0:
                raise InputError(f"vectors must be (n, dim), got shape {samples.shape}")
            return np.ascontiguousarray(v), None
        items = list(samples) if isinstance(samples, (list, tuple)) else [samples]
        if not items:
            raise InputError("nothing to enrol")
        for t in items:
            if not isinstance(t, Template):
                raise InputError("ShardedGallery takes templates or unit vectors, not images: "
                                 "make templates with an Engine first")
            if t.model != self.model or (self.model_hash is not None
                                         and t.model_hash != self.model_hash):
                raise ModelMismatchError(f"template is from {t.model}#{t.model_hash}; this "
                                         f"gallery holds {self.model}#{self.model_hash}")
        if len({t.model_hash for t in items}) > 1:
            raise ModelMismatchError("templates of different model hashes in one call")
        return items, items[0].model_hash

    def _bind(self, model_hash: str | None) -> None:
        """Bind an unbound gallery to the first templates' hash (one thread at a time: two
        first enrolments of different pipelines must not bind driver and shards apart)."""
        if model_hash is None:
            return
        with self._bind_lock:
            if self.model_hash is None:
                self._all("bind", model_hash)
                self.model_hash = model_hash
                self._calib = None
        if model_hash != self.model_hash:
            raise ModelMismatchError(f"templates are from {self.model}#{model_hash}; this "
                                     f"gallery holds {self.model}#{self.model_hash}")

    # ------------------------------------------------------------------ enrolment
    def enroll(self, subject_id: str, samples: Any, *, metadata: dict[str, Any] | None = None,
               expires_at: datetime | None = None, replace: bool = False) -> int:
        """Enrol (or add templates to) ``subject_id`` on its shard from a template, a list of
        templates or an ``(n, dim)`` unit-vector array. Returns the subject's template count."""
        i = self.shard_of(subject_id)
        check_time(expires_at, "expires_at")
        metadata = check_metadata(metadata)  # JSON-serialisable, as Gallery requires
        vectors, h = self._vectors(samples)
        self._bind(h)
        return self._gather([(i, self._actors[i].enroll.remote(subject_id, vectors, metadata,
                                                               expires_at, replace))])[0]

    def enroll_many(self, subject_ids: Sequence[str], samples: Sequence[Template] | np.ndarray,
                    *, expires_at: datetime | None = None) -> int:
        """Bulk enrolment, each shard getting its subjects' rows in one call (shards enrol in
        parallel; a shard that refuses its part does not undo the others'). Returns the number
        of templates added."""
        ids = [check_subject_id(s) for s in subject_ids]
        check_time(expires_at, "expires_at")
        if not ids and len(samples) == 0:
            return 0
        vectors, h = self._vectors(samples)
        if len(ids) != len(vectors):
            raise InputError(f"{len(ids)} ids for {len(vectors)} samples")
        self._bind(h)
        route = np.fromiter((shard_of(s, self.shards) for s in ids), dtype=np.int64, count=len(ids))
        refs = []
        for i in range(self.shards):
            rows = np.flatnonzero(route == i)
            if len(rows):
                part = np.ascontiguousarray(vectors[rows]) if isinstance(vectors, np.ndarray) \
                    else [vectors[r] for r in rows]
                refs.append((i, self._actors[i].enroll_many.remote(
                    [ids[r] for r in rows], part, expires_at)))
        return sum(self._gather(refs))

    def remove(self, subject_id: str) -> bool:
        """Remove a subject and all its templates; False if not enrolled."""
        i = self.shard_of(subject_id)
        return self._gather([(i, self._actors[i].remove.remote(subject_id))])[0]

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Remove every subject whose expiry is at or before ``now`` (default: the driver's
        clock, the same for every shard) on every shard; return their ids, sorted."""
        now = check_time(now, "now") or datetime.now(timezone.utc)
        return sorted(s for part in self._all("purge_expired", now) for s in part)

    # ------------------------------------------------------------------ search
    @property
    def template_count(self) -> int:
        return sum(self._all("template_count"))

    def threshold_for(self, fpir: float, n_templates: int | None = None) -> float:
        """Decision threshold for ``fpir`` at ``n_templates`` (default: the whole gallery's)."""
        if self._calib is None:
            self._calib = Gallery(self.model, self.model_hash)
        return self._calib.threshold_for(fpir, self.template_count if n_templates is None
                                         else n_templates)

    def identify(self, probe: Template, k: int = 5, fpir: float | None = 0.003, *,
                 threshold: float | None = None) -> Identification:
        """Top-``k`` subjects over every shard for a template and the decision at ``fpir`` for
        the whole gallery's size (or at an explicit ``threshold``). ``probe``: a Template or
        one unit vector, as for :meth:`Gallery.identify`."""
        one = probe if is_vector(probe) else [probe]
        return self.identify_many(one, k, fpir, threshold=threshold)[0]

    def identify_many(self, probes: Any, k: int = 5, fpir: float | None = 0.003, *,
                      threshold: float | None = None) -> list[Identification]:
        """:meth:`identify` for templates or unit-vector rows, sent to the shards in chunks of
        :data:`SEARCH_CHUNK` probes (``search_timeout`` bounds each chunk, so a large healthy
        batch is not mistaken for a silent shard)."""
        check_search_args(k, fpir, threshold)
        q, _ = self._vectors(probes)
        out: list[Identification] = []
        for c0 in range(0, len(q), SEARCH_CHUNK):
            chunk = q[c0:c0 + SEARCH_CHUNK]
            parts = self._all("search", chunk, k, timeout=self.search_timeout)  # or ShardError
            total = sum(n for n, _ in parts)
            t = float(threshold) if threshold is not None else self.threshold_for(fpir, total)
            for p in range(len(chunk)):
                merged = [c for _, rows in parts for c in rows[p]]
                merged.sort(key=lambda c: (-c[1], c[0]))
                cands = [Candidate(sid, sc, r + 1) for r, (sid, sc) in enumerate(merged[:k])]
                decision = cands[0].subject_id if cands and cands[0].score >= t else None
                out.append(Identification(cands, decision, t, fpir if threshold is None else None,
                                          total, self.model))
        return out

    # ------------------------------------------------------------------ info / persistence
    def info(self) -> dict[str, Any]:
        per = self._all("info")
        return {"model": self.model, "model_hash": self.model_hash, "kind": self.kind,
                "shards": self.shards,
                "subjects": sum(p["subjects"] for p in per),
                "templates": sum(p["templates"] for p in per),
                "memory_bytes": sum(p["memory_bytes"] for p in per),
                "per_shard": [{"subjects": p["subjects"], "templates": p["templates"],
                               "index": p["index"], "memory_bytes": p["memory_bytes"]}
                              for p in per]}

    def save(self, directory: str | Path, *, key: bytes | None = None) -> None:
        """Every shard writes ``shard-NNNN.<generation>.gallery`` (atomically, encrypted with
        ``key``) into ``directory``; then the driver replaces ``manifest.json``, which names
        those files, and deletes the files of the previous save. The manifest is the commit: a
        save that fails (a dead shard, a crash) leaves the previous save loadable. The directory
        becomes the one :meth:`restart_shard` reloads from."""
        from matcher import gallery_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        d = d.resolve()
        generation = f"{time.time_ns():x}{os.urandom(4).hex()}"
        files = [shard_file(i, generation) for i in range(self.shards)]
        try:
            counts = self._gather([(i, a.save.remote(str(d / files[i]), key))
                                   for i, a in enumerate(self._actors)])
        except BaseException:
            for f in files:  # a partial save is garbage; the manifest still names the last one
                with contextlib.suppress(OSError):
                    os.unlink(d / f)
            raise
        manifest = {"format": _FORMAT, "version": 2, "shards": self.shards, "model": self.model,
                    "model_hash": self.model_hash, "kind": self.kind,
                    "routing": "blake2b-64(utf8 id) mod shards", "encrypted": key is not None,
                    "files": files, "templates": counts}
        gallery_file.write_atomic(d / MANIFEST, json.dumps(manifest, indent=1).encode())
        for old in d.glob("shard-*.gallery"):  # earlier generations, now unreferenced
            if old.name not in files:
                with contextlib.suppress(OSError):
                    old.unlink()
        self._saved, self._key, self._files = d, key, files

    @classmethod
    def load(cls, directory: str | Path, *, key: bytes | None = None,
             ray_address: str | None = None, threads: int = 1,
             actor_options: dict[str, Any] | None = None, search_timeout: float = 30.0,
             timeout: float = 600.0) -> ShardedGallery:
        """Open a directory written by :meth:`save`: one actor per shard file, checked against
        the manifest's template counts."""
        from matcher.errors import GalleryFileError

        d = Path(directory).resolve()
        try:
            m = json.loads((d / MANIFEST).read_text())
            if m.get("format") != _FORMAT:
                raise ValueError(f"format is {m.get('format')!r}")
            shards, model, model_hash, kind = (int(m["shards"]), m["model"], m["model_hash"],
                                               m["kind"])
            expected = [int(c) for c in m["templates"]]
            files = [str(f) for f in m["files"]]
            if len(files) != shards or len(expected) != shards or any(
                    f != Path(f).name or not f.endswith(".gallery") for f in files):
                raise ValueError("files / templates do not match the shard count")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise GalleryFileError(f"{d / MANIFEST}: not a sharded-gallery manifest ({exc})") \
                from None
        missing = [f for f in files if not os.path.exists(d / f)]
        if missing:
            raise GalleryFileError(f"{d}: missing shard files {missing}")
        g = cls(model, model_hash, shards=shards, ray_address=ray_address, kind=kind,
                threads=threads, actor_options=actor_options, search_timeout=search_timeout,
                timeout=timeout, _load_dir=d, _key=key, _files=files)
        try:
            got = g._all("template_count")
            if got != expected:
                raise GalleryFileError(f"{d}: shard template counts {got} differ from the "
                                       f"manifest's {expected}")
        except BaseException:
            g.close()
            raise
        return g

    def close(self) -> None:
        """Kill the shard actors (the gallery is unusable afterwards; save first)."""
        self._closed = True
        for a in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)

    def __enter__(self) -> ShardedGallery:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
