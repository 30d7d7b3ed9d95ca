"""Batch watchlist screening: every face of every probe searched against a watchlist gallery.

>>> from matcher.screening import screen
>>> summary = screen("watchlist.gallery", "arrivals/", "hits.csv", fpir=0.003)
>>> summary.hits, summary.failures          # {"NoFaceError": 3, "ImageDecodeError": 1}

Probes are a directory (searched recursively for :data:`~matcher.datasets.IMAGE_SUFFIXES`,
in sorted order of their relative paths), a CSV file with a ``path`` column (relative paths are
resolved against the CSV's folder; rows keep their order) or a *templates file* (below). Every face
found in a probe image is searched (:meth:`Engine.face_templates`), so a group photo can hit
several times. A hit is one of the top-``k`` candidates of a face whose score reaches the
threshold (set for ``fpir`` at the watchlist's size, or given explicitly).

Output rows (CSV with a header, or JSON lines) are written in probe order:
``probe, face, x, y, w, h, subject_id, score, rank, threshold, fpir``. ``probe`` is the path
relative to the probe directory, the CSV's ``path`` value, or ``#i`` (record ``i``, from 0) of a
templates file, whose rows have an empty box.

**Resuming.** ``<out>.progress`` (JSON, replaced atomically) holds the number of probes fully
processed, the output's byte length after their rows and the running counters. It is rewritten
only after the rows of a batch are flushed and fsynced, so it never counts a row that is not on
disk. ``resume=True`` truncates the output to the checkpointed length (dropping any torn or
uncounted tail) and continues with the next probe: an interruption at any moment (Ctrl-C,
SIGKILL, power loss) neither repeats nor loses a row. A resume refuses a different watchlist
(SHA-256), operating point, output format, probe source (its absolute path; a templates file's
bytes) or probe list. Without ``resume`` an existing output is
an error. The checkpoint is kept after completion (``"complete": true``).

**Parallelism.** ``workers`` spawned processes each run their own :class:`~matcher.Engine` with
``max(1, cores // workers)`` inference threads (unless ``threads`` is given), so workers x threads
stays within the cores. Batches of probes go to the workers (:mod:`matcher.screen_local`: dead
workers replaced, hung ones a :class:`WorkerError`); the parent searches the watchlist and writes
the rows in probe order. With one worker everything runs in-process. With
``ray_address`` the workers are Ray actors anywhere on a cluster (:mod:`matcher.screen_ray`);
the parent still searches, writes and checkpoints, so the output and resuming are unchanged.

**Templates file** (``.mtpl`` by convention; :func:`write_templates` / :func:`read_templates`):
the 4-byte magic ``b"MTS1"``, then one record per template: a little-endian ``u32`` length
(1..65536) followed by that many bytes of :meth:`Template.to_bytes` (any encoding). A corrupt
record is a :class:`~matcher.errors.TemplateFormatError` failure of that probe only; a truncated
tail is one failure and ends the file.

**Audit.** Each run that gets past its argument checks appends one JSON line to the audit log (default ``<out>.audit.jsonl``): UTC
times, user, host, status, watchlist path and SHA-256, probe source (the directory / CSV / file
path, never the individual probe paths), counts, failures by type, operating point, model and
matcher version, and the executor (local or Ray, workers, threads). No face data.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from matcher import audit as audit_trail
from matcher.datasets import IMAGE_SUFFIXES
from matcher.errors import InputError, MatcherError, ModelMismatchError, TemplateFormatError

if TYPE_CHECKING:
    from matcher.image import EncodedImage

# ---------------------------------------------------------------------------- templates files
TEMPLATES_MAGIC = b"MTS1"
MAX_RECORD = 65536
_LEN = struct.Struct("<I")


def write_templates(path: str | Path, templates: Sequence[Any], encoding: str = "f32") -> int:
    """Write ``templates`` (or pre-serialised template bytes) as a templates file; returns
    the number of records. The file is written atomically."""
    from matcher.fileio import write_atomic

    buf = io.BytesIO()
    buf.write(TEMPLATES_MAGIC)
    n = 0
    for t in templates:
        blob = bytes(t) if isinstance(t, (bytes, bytearray, memoryview)) else t.to_bytes(encoding)
        if not 1 <= len(blob) <= MAX_RECORD:
            raise InputError(f"template record {n} is {len(blob)} bytes (1..{MAX_RECORD})")
        buf.write(_LEN.pack(len(blob)))
        buf.write(blob)
        n += 1
    write_atomic(Path(path), buf.getvalue())
    return n


def _scan_templates(path: Path) -> tuple[list[tuple[int, int]], str | None]:
    """``[(offset, length)]`` of the records, and a message if the file ends in a torn record."""
    spans: list[tuple[int, int]] = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(TEMPLATES_MAGIC)) != TEMPLATES_MAGIC:
            raise InputError(f"{path} is not a templates file (no {TEMPLATES_MAGIC!r} magic)")
        pos = len(TEMPLATES_MAGIC)
        while pos < size:
            head = f.read(_LEN.size)
            if len(head) < _LEN.size:
                return spans, f"truncated record header at byte {pos}"
            (n,) = _LEN.unpack(head)
            if not 1 <= n <= MAX_RECORD:
                return spans, f"bad record length {n} at byte {pos}"
            if pos + _LEN.size + n > size:
                return spans, f"truncated record at byte {pos} ({n} bytes announced)"
            spans.append((pos + _LEN.size, n))
            pos += _LEN.size + n
            f.seek(pos)
    return spans, None


def read_templates(path: str | Path) -> Iterator[Any]:
    """The records of a templates file in order: a :class:`Template`, or the
    :class:`TemplateFormatError` of a corrupt record (a torn tail yields one error and ends)."""
    from matcher.types import Template

    path = Path(path)
    spans, tail = _scan_templates(path)
    with open(path, "rb") as f:
        for off, n in spans:
            f.seek(off)
            try:
                yield Template.from_bytes(f.read(n))
            except MatcherError as exc:
                yield exc
    if tail:
        yield TemplateFormatError(f"{path}: {tail}")


# ---------------------------------------------------------------------------- probe sources
class Probe(NamedTuple):
    """One probe: ``name`` as written in the output; an image ``path`` (with its bytes in ``data``
    once read for a remote worker), or a record ``span`` (offset, length) of a templates file, or
    an ``error`` known before extraction."""

    name: str
    path: str | None = None
    span: tuple[int, int] | None = None
    error: str | None = None
    data: EncodedImage | None = None


@dataclass
class ProbeSource:
    """The probes of a screening run, in output order."""

    kind: str  # "directory", "csv" or "templates"
    path: Path
    probes: list[Probe]
    ignored: int = 0  # directory files without an image suffix

    def __len__(self) -> int:
        return len(self.probes)

    def fingerprint(self) -> str:
        """SHA-256 of the kind, the source's absolute path, the probe names and, for a templates
        file, its bytes: a resume refuses another source or a changed probe list (a templates
        file's probe names are only ``#0, #1, ...``)."""
        h = hashlib.sha256(self.kind.encode())
        h.update(b"\0" + str(self.path.resolve()).encode("utf-8", "surrogateescape"))
        for p in self.probes:
            h.update(b"\0" + p.name.encode("utf-8", "surrogateescape"))
        if self.kind == "templates":
            h.update(b"\0")
            with open(self.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()


def open_probes(path: str | Path) -> ProbeSource:
    """A directory, a CSV with a ``path`` column, or a templates file (told by its magic)."""
    path = Path(path)
    if path.is_dir():
        images, ignored = [], 0
        for p in path.rglob("*"):
            if p.is_dir():
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES:  # incl. a dangling link: a failed probe
                images.append(p.relative_to(path).as_posix())
            else:
                ignored += 1
        return ProbeSource("directory", path, [Probe(n, str(path / n)) for n in sorted(images)],
                           ignored)
    if not path.is_file():
        raise InputError(f"probes: {path} is neither a directory nor a file")
    with open(path, "rb") as f:
        head = f.read(len(TEMPLATES_MAGIC))
    if head == TEMPLATES_MAGIC:
        spans, tail = _scan_templates(path)
        probes = [Probe(f"#{i}", span=s) for i, s in enumerate(spans)]
        if tail:
            probes.append(Probe(f"#{len(spans)}", error=f"TemplateFormatError: {tail}"))
        return ProbeSource("templates", path, probes)
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    raise InputError(f"{path}: a probe CSV needs a 'path' column "
                                     f"(found {reader.fieldnames})")
                rows = [((r.get("path") or "").strip(), reader.line_num) for r in reader]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{path}: not a readable CSV: {exc}") from None
        base = path.parent
        probes = [Probe(v, str(base / v)) if v else
                  Probe(f"<line {line}>", error="InputError: empty path") for v, line in rows]
        return ProbeSource("csv", path, probes)
    raise InputError(f"probes: {path} must be a directory, a .csv with a 'path' column, or a "
                     f"templates file (magic {TEMPLATES_MAGIC!r})")


# ---------------------------------------------------------------------------- extraction
class ProbeResult(NamedTuple):
    """What extraction found in one probe: ``faces`` = [(face number, box or None, unit
    vector)] (numbers as :meth:`Engine.face_templates` gives them, also when some faces failed
    the quality policy; those are counted in ``rejected``), or the failure's ``error`` type name
    and ``message``."""

    faces: list[tuple[int, tuple[float, float, float, float] | None, np.ndarray]]
    error: str | None = None
    message: str = ""
    model: tuple[str, str] | None = None  # a template record's (model, model_hash)
    rejected: int = 0


def _failure(exc: BaseException) -> ProbeResult:
    return ProbeResult([], type(exc).__name__, str(exc))


def extract(engine: Any, probes: Sequence[Probe], templates_path: str | None = None,
            quality: Any = None
            ) -> tuple[tuple[str, str] | None, list[ProbeResult]]:
    """Faces and vectors of each probe; failures are results, never raised. Returns the
    (model, model_hash) the vectors belong to (the engine's; None for templates files)."""
    out: list[ProbeResult] = []
    f = open(templates_path, "rb") if templates_path else None  # noqa: SIM115 (closed below)
    try:
        for p in probes:
            if p.error is not None:
                kind, _, msg = p.error.partition(": ")
                out.append(ProbeResult([], kind, msg))
                continue
            try:
                if p.span is not None:
                    from matcher.types import Template

                    f.seek(p.span[0])
                    t = Template.from_bytes(f.read(p.span[1]))
                    out.append(ProbeResult([(0, None, t.vector)], model=(t.model, t.model_hash)))
                    continue
                found = engine.face_templates(p.data if p.data is not None else p.path,
                                              quality=quality)
                if not found:
                    out.append(ProbeResult([], "NoFaceError", "no face found in the image"))
                    continue
                good = [(i, face, t) for i, (face, t) in enumerate(found)
                        if not isinstance(t, MatcherError)]
                rejected = len(found) - len(good)
                if not good:  # every face failed the quality policy: count it by its reason
                    err = found[0][1]
                    out.append(ProbeResult([], f"QualityError ({err.reason})", str(err),
                                           rejected=rejected))
                    continue
                out.append(ProbeResult([(i, tuple(float(v) for v in face.box), t.vector)
                                        for i, face, t in good], rejected=rejected))
            except Exception as exc:  # noqa: BLE001  a bad file is a counted failure, never fatal
                out.append(_failure(exc))
    finally:
        if f is not None:
            f.close()
    key = (engine.model, engine.model_hash) if engine is not None else None
    return key, out


#: Seconds without any batch finishing after which the workers count as hung (local worker
#: processes and Ray workers alike): the run ends with :class:`WorkerError`, never waits forever.
BATCH_TIMEOUT = 600.0


class WorkerError(MatcherError):
    """Screening workers could not be started, hang, or died on the same batch too often."""


def batch_names(batch: Sequence[Probe]) -> str:
    """The probes of a batch as error messages name them: ``first .. last``."""
    return f"{batch[0].name} .. {batch[-1].name}" if batch else "an empty batch"


def default_workers(cores: int | None = None) -> int:
    """One worker per two cores (a 2-core machine runs in-process)."""
    from matcher.backends import available_cores

    return max(1, (cores or available_cores()) // 2)


# ---------------------------------------------------------------------------- results
class Hit(NamedTuple):
    """One output row."""

    probe: str
    face: int
    box: tuple[float, float, float, float] | None
    subject_id: str
    score: float
    rank: int
    threshold: float
    fpir: float | None


COLUMNS = ("probe", "face", "x", "y", "w", "h", "subject_id", "score", "rank", "threshold", "fpir")


def format_rows(hits: Sequence[Hit], jsonl: bool) -> bytes:
    buf = io.StringIO()
    if jsonl:
        for h in hits:
            buf.write(json.dumps({"probe": h.probe, "face": h.face,
                                  "box": [round(v, 1) for v in h.box] if h.box else None,
                                  "subject_id": h.subject_id, "score": round(h.score, 6),
                                  "rank": h.rank, "threshold": round(h.threshold, 6),
                                  "fpir": h.fpir}, ensure_ascii=False) + "\n")
    else:
        w = csv.writer(buf, lineterminator="\n")
        for h in hits:
            box = [f"{v:.1f}" for v in h.box] if h.box else ["", "", "", ""]
            w.writerow([h.probe, h.face, *box, h.subject_id, f"{h.score:.6f}", h.rank,
                        f"{h.threshold:.6f}", "" if h.fpir is None else f"{h.fpir:g}"])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def read_hits(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV or JSON-lines output (values as strings, box flattened into x, y, w, h)."""
    text = Path(path).read_text(encoding="utf-8")
    if text.startswith(COLUMNS[0] + ","):
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for line in text.splitlines():
        d = json.loads(line)
        box = d.pop("box") or [""] * 4
        rows.append({k: "" if v is None else str(v) for k, v in
                     {**d, "x": box[0], "y": box[1], "w": box[2], "h": box[3]}.items()})
    return rows


@dataclass
class ScreenSummary:
    """Counters of a screening run (cumulative over resumed runs, except ``elapsed``/``rate``)."""

    probes: int = 0  # in the source
    processed: int = 0  # fully screened so far (incl. failures)
    faces: int = 0  # searched
    faces_rejected: int = 0  # failed the quality policy (a probe none of whose faces passed
    #                          is also a "QualityError (<reason>)" failure)
    hits: int = 0
    probes_with_hits: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    ignored: int = 0  # non-image files skipped in a probe directory
    resumed_from: int = 0
    elapsed: float = 0.0  # this run
    threshold: float = 0.0
    fpir: float | None = None
    complete: bool = False

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        """Probes per second in this run."""
        done = self.processed - self.resumed_from
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def format(self) -> str:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        op = f"FPIR {self.fpir:g}, threshold {self.threshold:.4f}" if self.fpir is not None \
            else f"threshold {self.threshold:.4f}"
        lines = [f"probes read {self.processed} of {self.probes}"
                 + (f" (resumed after {self.resumed_from})" if self.resumed_from else "")
                 + (f", {self.ignored} non-image files ignored" if self.ignored else ""),
                 f"faces found {self.faces}"
                 + (f", {self.faces_rejected} rejected by the quality policy"
                    if self.faces_rejected else ""),
                 f"hits {self.hits} (in {self.probes_with_hits} probes) at {op}",
                 f"failures {self.failed}: {fails}",
                 f"rate {self.rate:.1f} probes/s ({self.elapsed:.1f} s this run)"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- checkpoint
CHECKPOINT_VERSION = 2  # 2: source path in the fingerprint, faces_rejected


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    from matcher.fileio import write_atomic

    write_atomic(path, json.dumps(state, sort_keys=True).encode())


def _matcher_version() -> str:
    try:
        from importlib.metadata import version

        return version("matcher")
    except Exception:  # noqa: BLE001  not installed as a distribution
        import matcher

        return getattr(matcher, "__version__", "unknown")


# ---------------------------------------------------------------------------- progress
class Progress:
    """tqdm bar (rate, ETA) on a terminal; otherwise a plain log line every ``interval`` s."""

    def __init__(self, total: int, initial: int = 0, *, stream: Any = None,
                 interval: float = 10.0, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.interval = total, interval
        tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        self._t0 = time.monotonic()
        self._last = self._t0
        self._start_done = initial
        self._reported = initial
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="probe", desc="screen",
                             file=self.stream, dynamic_ncols=True)

    def __call__(self, s: ScreenSummary) -> None:
        if self._bar is not None:
            self._bar.update(s.processed - self._bar.n)
            self._bar.set_postfix(hits=s.hits, failed=s.failed, refresh=False)
            return
        now = time.monotonic()
        if s.processed == self._reported or (now - self._last < self.interval
                                              and s.processed < self.total):
            return
        self._last, self._reported = now, s.processed
        rate = (s.processed - self._start_done) / max(now - self._t0, 1e-9)
        eta = (self.total - s.processed) / rate if rate > 0 else float("inf")
        print(f"screen: {s.processed}/{self.total} probes, {s.faces} faces, {s.hits} hits, "
              f"{s.failed} failures, {rate:.1f} probes/s, ETA {eta:.0f} s",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------- screening
def screen(watchlist: Any, probes: str | Path | ProbeSource, out: str | Path, *,
           key: bytes | None = None, fpir: float | None = None, threshold: float | None = None,
           top_k: int = 5, workers: int | None = None, threads: int | None = None,
           batch_size: int = 32, resume: bool = False, jsonl: bool = False,
           audit: str | Path | bool | None = None, engine: Any = None,
           engine_options: dict[str, Any] | None = None,
           progress: Callable[[ScreenSummary], None] | None = None,
           on_failure: Callable[[str, str, str], None] | None = None,
           quality: Any = None, ray_address: str | None = None) -> ScreenSummary:
    """Screen every face of every probe against ``watchlist`` and write the hits to ``out``.

    ``watchlist``: a gallery file path (``key`` for an encrypted one) or a :class:`Gallery`.
    ``probes``: a directory, a CSV with a ``path`` column, a templates file, or a
    :class:`ProbeSource`. ``fpir`` (default 0.003) or an explicit ``threshold``, not both.
    ``engine``: an Engine to use in-process (then ``workers`` defaults to 1, and more workers,
    ``ray_address`` or ``engine_options`` are an InputError); else engines are made from
    ``engine_options`` + ``threads``; ``workers`` > 1 spawns processes with their own engines.
    ``audit``: audit log path (default ``<out>.audit.jsonl``; ``False``: none).
    ``quality``: a quality policy ("probe", "enrol", a mapping; None: no check) each face must
    pass to be screened; faces that fail are counted in ``faces_rejected`` (and a probe none of
    whose faces passes as a ``QualityError (<reason>)`` failure); rows keep the face numbers of
    :meth:`Engine.face_templates`.
    ``ray_address`` ("local", "auto", "ray://host:port"): extract on Ray workers instead
    (:mod:`matcher.screen_ray`; ``workers`` defaults to the cluster's free CPUs / ``threads``,
    ``threads`` to 1); the output is the same as a local run's.
    ``progress(summary)`` is called after each checkpoint; ``on_failure(probe, error type,
    message)`` for each failed probe. Returns the cumulative :class:`ScreenSummary`.
    Raises :class:`MatcherError` (bad arguments, watchlist, existing output, resume mismatch).
    """
    from matcher.backends import available_cores
    from matcher.gallery import Gallery
    from matcher.gallery_file import read as read_gallery_file

    t_start = time.monotonic()
    started = audit_trail.now_utc()
    if fpir is not None and threshold is not None:
        raise InputError("give fpir or threshold, not both")
    if threshold is None and fpir is None:
        fpir = 0.003
    if not isinstance(top_k, int) or not 1 <= top_k <= 1000:
        raise InputError(f"top_k must be in 1..1000, got {top_k!r}")
    if threads is not None and (type(threads) is not int or threads < 1):
        raise InputError(f"threads must be a positive int, got {threads!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    cores = available_cores()
    if engine is not None and (ray_address is not None or engine_options is not None
                               or (workers is not None and workers != 1)):
        # Workers build their own engines from engine_options; settings of this engine that
        # are not part of its model hash (max_faces, score threshold, policies) would be lost.
        raise InputError("engine= runs in-process only: give engine_options= (and workers / "
                         "ray_address) instead, or drop workers / ray_address")
    if ray_address is None:
        workers = (1 if engine is not None else default_workers(cores)) if workers is None \
            else workers
    if workers is not None and (type(workers) is not int or workers < 1):
        raise InputError(f"workers must be a positive int, got {workers!r}")

    # -- watchlist and operating point
    if isinstance(watchlist, Gallery):
        gallery, wl_path = watchlist, None
        wl_sha = hashlib.sha256(watchlist.to_bytes()).hexdigest()  # of its file form, unencrypted
    else:
        wl_path = Path(watchlist)
        data = read_gallery_file(wl_path)
        wl_sha = hashlib.sha256(data).hexdigest()
        gallery = Gallery.from_bytes(data, key=key)
        del data
    thr = float(threshold) if threshold is not None else gallery.threshold_for(fpir)
    gkey = (gallery.model, gallery.model_hash)

    # -- probes
    source = probes if isinstance(probes, ProbeSource) else open_probes(probes)
    total = len(source)
    out = Path(out)
    ckpt_path = out.with_name(out.name + ".progress")
    audit_path = None if audit is False else Path(audit) if audit not in (None, True) \
        else out.with_name(out.name + ".audit.jsonl")
    identity = {"version": CHECKPOINT_VERSION, "format": "jsonl" if jsonl else "csv",
                "watchlist_sha256": wl_sha, "threshold": thr, "fpir": fpir, "top_k": top_k,
                "probes": total, "probe_fingerprint": source.fingerprint(),
                "quality": quality if isinstance(quality, (str, type(None))) else
                json.dumps(quality, sort_keys=True)}

    summary = ScreenSummary(probes=total, ignored=source.ignored, threshold=thr, fpir=fpir)
    counters = ("done", "offset", "faces", "faces_rejected", "hits", "probes_with_hits",
                "failures", "complete")
    state: dict[str, Any] = {**identity, "done": 0, "offset": 0, "faces": 0,
                             "faces_rejected": 0, "hits": 0, "probes_with_hits": 0,
                             "failures": {}, "complete": False}
    if resume and ckpt_path.is_file():
        try:
            old = json.loads(ckpt_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot resume: checkpoint {ckpt_path} is unreadable: {exc}") from None
        if not isinstance(old, dict):
            raise InputError(f"cannot resume: checkpoint {ckpt_path} is not a checkpoint")
        changed = [k for k, v in identity.items() if old.get(k) != v]
        if changed:
            raise InputError(f"cannot resume {out}: {', '.join(changed)} differ from the "
                             f"interrupted run (checkpoint {ckpt_path})")
        missing = [k for k in counters if k not in old]
        if missing or not isinstance(old["offset"], int) or not isinstance(old["done"], int) \
                or not 0 <= old["done"] <= total:
            raise InputError(f"cannot resume: checkpoint {ckpt_path} is damaged "
                             f"({', '.join(missing) or 'offset / done'})")
        size = out.stat().st_size if out.exists() else 0
        if size < old["offset"]:
            raise InputError(f"cannot resume: {out} is {size} bytes, shorter than its checkpoint "
                             f"({old['offset']}); it was changed outside the screen")
        state.update({k: old[k] for k in counters})
    elif out.exists():
        if resume:
            raise InputError(f"cannot resume: {out} exists but has no checkpoint {ckpt_path}")
        raise InputError(f"{out} already exists: pass --resume to continue an interrupted "
                         "screen, or choose another output")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_checkpoint(ckpt_path, state)  # before the output exists: offset 0

    summary.resumed_from = summary.processed = state["done"]
    summary.faces, summary.hits = state["faces"], state["hits"]
    summary.faces_rejected = state["faces_rejected"]
    summary.probes_with_hits = state["probes_with_hits"]
    summary.failures = dict(state["failures"])
    summary.complete = state["complete"]
    if progress is not None:
        progress(summary)  # once before the first batch: totals and the resume point are known

    status, error = "complete", None
    pool = remote = None
    executor: dict[str, Any] = {"kind": "local", "workers": workers}
    fh = None
    try:
        fh = open(out, "r+b" if out.exists() else "w+b")  # noqa: SIM115 (closed in finally)
        fh.truncate(state["offset"])
        fh.seek(state["offset"])
        if state["offset"] == 0 and not jsonl:
            fh.write(",".join(COLUMNS).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            state["offset"] = fh.tell()
            _write_checkpoint(ckpt_path, state)
            _fsync_dir(out.parent.resolve())

        start = state["done"]
        batches = [source.probes[i:i + batch_size] for i in range(start, total, batch_size)]
        tpl_path = str(source.path) if source.kind == "templates" else None
        if not batches:
            results: Iterator[Any] = iter(())
        elif tpl_path is not None:
            results = (extract(None, b, tpl_path) for b in batches)
            executor = {"kind": "local", "workers": 1}
        elif ray_address is not None:
            try:
                from matcher.screen_ray import RayExtraction
            except ImportError as exc:
                raise InputError(str(exc)) from None

            remote = RayExtraction(ray_address, workers, threads or 1, engine_options or {},
                                   quality)
            executor = remote.describe()
            if remote.model != gkey:
                raise ModelMismatchError(f"the engine makes {remote.model[0]}#{remote.model[1]} "
                                         f"templates, the watchlist holds {gkey[0]}#{gkey[1]}")
            results = remote.results(batches)
        elif workers == 1:
            if engine is None:
                from matcher.engine import Engine

                engine = Engine(threads=threads or cores, **(engine_options or {}))
            executor = {"kind": "local", "workers": 1, "threads": engine.threads}
            results = (extract(engine, b, quality=quality) for b in batches)
        else:
            from matcher.screen_local import ProcessExtraction

            pool = ProcessExtraction(workers, threads or max(1, cores // workers),
                                     engine_options or {}, quality)
            executor = pool.describe()
            results = pool.results(batches)

        for batch, (mkey, res) in zip(batches, results):
            if mkey is not None and mkey != gkey:
                raise ModelMismatchError(f"the engine makes {mkey[0]}#{mkey[1]} templates, the "
                                         f"watchlist holds {gkey[0]}#{gkey[1]}")
            hits = _search(gallery, batch, res, gkey, top_k, fpir, threshold, thr, summary,
                           on_failure)
            if hits:
                fh.write(format_rows(hits, jsonl))
                fh.flush()
                os.fsync(fh.fileno())
            summary.processed += len(batch)
            state.update(done=summary.processed, offset=fh.tell(), faces=summary.faces,
                         faces_rejected=summary.faces_rejected, hits=summary.hits, probes_with_hits=summary.probes_with_hits,
                         failures=summary.failures)
            _write_checkpoint(ckpt_path, state)
            summary.elapsed = time.monotonic() - t_start
            if progress is not None:
                progress(summary)
        state["complete"] = summary.complete = True
        _write_checkpoint(ckpt_path, state)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if pool is not None:
            pool.close(completed=status == "complete")
        if remote is not None:
            remote.close()
        if fh is not None:
            fh.close()
        summary.elapsed = time.monotonic() - t_start
        if audit_path is not None:
            audit_trail.append(audit_path, "watchlist_screen", {
                "started_utc": started, "status": status, "error": error,
                "resumed": summary.resumed_from > 0,
                "watchlist": str(wl_path.resolve()) if wl_path else None,
                "watchlist_sha256": wl_sha, "watchlist_subjects": len(gallery),
                "watchlist_templates": gallery.template_count,
                "probe_source": str(source.path.resolve()), "probe_kind": source.kind,
                "probes": total, "probes_processed": summary.processed,
                "processed_this_run": summary.processed - summary.resumed_from,
                "faces": summary.faces, "faces_rejected": summary.faces_rejected,
                "hits": summary.hits,
                "probes_with_hits": summary.probes_with_hits, "failures": summary.failures,
                "operating_point": {"fpir": fpir, "threshold": thr, "top_k": top_k,
                                    "quality": identity["quality"]},
                "model": gallery.model, "model_hash": gallery.model_hash, "executor": executor,
                "output": str(out.resolve()), "matcher_version": _matcher_version()})
    return summary


def _search(gallery: Any, batch: list[Probe], res: list[ProbeResult], gkey: tuple[str, str],
            top_k: int, fpir: float | None, threshold: float | None, thr: float,
            summary: ScreenSummary, on_failure: Callable[[str, str, str], None] | None
            ) -> list[Hit]:
    """Search every face of the batch at once; count failures; hits in probe / face order."""
    owners: list[tuple[int, Probe, int, Any]] = []
    vecs = []
    dim = gallery.dim
    for j, (p, r) in enumerate(zip(batch, res)):
        if r.model is not None and r.model != gkey:  # a template record of another model
            r = ProbeResult([], "ModelMismatchError", f"template is from {r.model[0]}#"
                            f"{r.model[1]}, the watchlist holds {gkey[0]}#{gkey[1]}")
        elif dim is not None and (bad := next((v.shape for _, _, v in r.faces
                                                if v.shape != (dim,)), None)) is not None:
            r = ProbeResult([], "TemplateError", f"template has shape {bad}, the watchlist "
                            f"holds {dim}-d templates")
        summary.faces_rejected += r.rejected
        if r.error is not None:
            summary.failures[r.error] = summary.failures.get(r.error, 0) + 1
            if on_failure is not None:
                on_failure(p.name, r.error, r.message)
            continue
        for i, box, v in r.faces:
            owners.append((j, p, i, box))
            vecs.append(v)
    summary.faces += len(vecs)
    if not vecs or dim is None:  # an empty watchlist has nothing to hit
        return []
    found = gallery.identify_many(np.stack(vecs), top_k, fpir, threshold=threshold)
    hits: list[Hit] = []
    hit_probes: set[int] = set()  # positions in the batch: a CSV may list a path twice
    for (j, p, i, box), ident in zip(owners, found):
        for c in ident.candidates:
            if c.score >= thr:
                hits.append(Hit(p.name, i, box, c.subject_id, c.score, c.rank, thr, fpir))
                hit_probes.add(j)
    summary.hits += len(hits)
    summary.probes_with_hits += len(hit_probes)
    return hits
