"""One thread budget for the whole process: inference backend, FAISS (OpenMP) and BLAS.

A gate box runs one matching process on a few cores. Three thread pools compete for them: the
inference runtime (ONNX Runtime intra-op threads, OpenVINO ``INFERENCE_NUM_THREADS``), FAISS's
OpenMP team and the BLAS under numpy (OpenBLAS, sized to every core by default). Left alone they
oversubscribe the cores and the p99 of a gate transaction suffers. This module turns one number,
the **total** threads the process may use, into a setting for each pool::

    import matcher.threads
    matcher.threads.configure(total=4, mode="latency")   # or MATCHER_THREADS=4
    eng = matcher.Engine()                               # threads=None -> the budget's 4

Modes (``mode=`` or ``$MATCHER_THREADS_MODE``; default ``"latency"``):

``"latency"`` - one request at a time, as fast as possible (a gate serving one traveller):
    inference threads per Engine = ``total`` in 1 stream (every thread works on the one
    request); workers = 1; FAISS 1 OpenMP thread per search; BLAS 1 thread.
``"throughput"`` - many requests at once (several gate threads on a shared Engine, batch
    screening): workers = ``total``; an ``Engine(threads=None)`` gets ``total`` threads in
    ``total`` streams, i.e. ``total`` requests run side by side with 1 thread each; FAISS 1;
    BLAS 1. (A process per worker instead passes ``threads=1`` to each of its Engines.)

Why streams: an OpenVINO network compiled with one stream runs one request at a time, whatever
the number of threads calling it; measured here (SFace bf16, 2 cores, 2 gate threads on one
network): 1 stream x 2 threads 111 faces/s, 2 streams x 1 thread 219 faces/s; a single request
takes 7.3 ms on 1 stream x 2 threads and 8.7 ms on one of 2 streams.

Why FAISS and BLAS get 1 thread in both modes: a single-probe search of 10^5 x 128 templates was
slower with 2 OpenMP threads than with 1 on the 2-core development machines (see
:mod:`matcher.index`), and the only BLAS work on the request path is small (normalising one
vector, ``G @ q`` for 500 rows), where thread wake-ups cost more than they save. The cores go to
inference, where they pay.

``total`` defaults to ``$MATCHER_THREADS`` if set, else the cores this process may run on
(affinity-aware, :func:`matcher.backends.available_cores`).

What is applied, and how:

* inference: read by :class:`matcher.Engine` when its ``threads`` argument is None
  (:func:`inference_threads`); engines created before :func:`configure` keep their threads.
* BLAS: capped with threadpoolctl (``threadpool_limits(blas, user_api="blas")``) for every BLAS
  library loaded in the process (numpy's OpenBLAS, the one FAISS ships). Process-wide.
* FAISS / OpenMP: ``faiss.omp_set_num_threads`` and threadpoolctl's OpenMP limit. In libgomp that
  setting is per OS thread (each thread starts from the process default), which is why
  :class:`matcher.index.VectorIndex` sets its own ``threads`` (default 1) before every FAISS call;
  the budget sets the calling thread's default so that direct FAISS calls obey it too.
* Nothing global changes until :func:`configure` is called, or, when ``$MATCHER_THREADS`` is set,
  until the first Engine is created (:func:`ensure_configured`). Without either, behaviour is as
  before: an Engine takes every core, BLAS and OpenMP keep their library defaults.

threadpoolctl is optional at run time: without it BLAS is not capped (set ``OPENBLAS_NUM_THREADS``
before starting Python) and :attr:`ThreadBudget.applied` says what was applied.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from matcher.errors import InputError

__all__ = [
    "MODES",
    "ThreadBudget",
    "budget",
    "configure",
    "current",
    "ensure_configured",
    "inference_streams",
    "inference_threads",
    "limits_report",
    "plan",
    "reset",
]

MODES = ("latency", "throughput")
ENV_TOTAL = "MATCHER_THREADS"
ENV_MODE = "MATCHER_THREADS_MODE"


@dataclass(frozen=True)
class ThreadBudget:
    """How ``total`` threads are split. ``inference``: threads of each Engine; ``streams``: how
    many requests an Engine runs side by side (its threads are split between them);
    ``workers``: how many requests are meant to run at once; ``faiss``: OpenMP threads per FAISS
    call; ``blas``: BLAS threads. ``applied``: the pools actually capped by :func:`configure`."""

    total: int
    mode: str
    inference: int
    workers: int
    faiss: int
    blas: int
    streams: int = 1
    applied: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["applied"] = list(self.applied)
        return d


def _cores() -> int:
    from matcher.backends import available_cores

    return available_cores()


def _check_total(total: object) -> int:
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise InputError(f"total threads must be a positive int, got {total!r}")
    return total


def _env_total() -> int | None:
    raw = os.environ.get(ENV_TOTAL, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"${ENV_TOTAL} must be a positive integer, got {raw!r}") from None
    return _check_total(value)


def _env_mode() -> str | None:
    raw = os.environ.get(ENV_MODE, "").strip()
    return raw or None


def plan(total: int | None = None, mode: str | None = None) -> ThreadBudget:
    """The split of ``total`` threads for ``mode`` (nothing is applied). Defaults: see module."""
    mode = mode or _env_mode() or "latency"
    if mode not in MODES:
        raise InputError(f"thread mode must be one of {MODES}, got {mode!r}")
    if total is None:
        total = _env_total() or _cores()
    total = _check_total(total)
    if mode == "latency":
        return ThreadBudget(total, mode, inference=total, workers=1, faiss=1, blas=1, streams=1)
    return ThreadBudget(total, mode, inference=total, workers=total, faiss=1, blas=1,
                        streams=total)


_lock = threading.Lock()
_active: ThreadBudget | None = None
_limiter: Any = None  # threadpoolctl's limits object of the active budget (to restore)


def _apply(b: ThreadBudget) -> tuple[tuple[str, ...], Any]:
    applied: list[str] = ["inference"]
    limiter = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: see module docstring
        threadpool_limits = None
    if threadpool_limits is not None:
        # BLAS first, then OpenMP. threadpoolctl's limits object remembers the originals.
        limiter = threadpool_limits(limits={"blas": b.blas, "openmp": b.faiss})
        applied += ["blas", "openmp"]
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        faiss = None
    if faiss is not None:
        faiss.omp_set_num_threads(b.faiss)
        applied.append("faiss")
    return tuple(applied), limiter


def configure(total: int | None = None, mode: str | None = None) -> ThreadBudget:
    """Set the process's thread budget and apply it (BLAS, OpenMP / FAISS now; inference for
    Engines created afterwards with ``threads=None``). Returns the budget in force."""
    global _active, _limiter
    b = plan(total, mode)
    with _lock:
        applied, limiter = _apply(b)
        if _limiter is None:
            _limiter = limiter  # keep the first: it holds the library defaults for reset()
        _active = ThreadBudget(**{**asdict(b), "applied": applied})
        return _active


def reset() -> None:
    """Forget the budget and restore BLAS / OpenMP to what they were before :func:`configure`."""
    global _active, _limiter
    with _lock:
        if _limiter is not None:
            _limiter.restore_original_limits()
        _limiter = None
        _active = None
        try:
            import faiss
            from threadpoolctl import threadpool_info
            omp = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"]
            faiss.omp_set_num_threads(max(omp) if omp else _cores())
        except ImportError:  # pragma: no cover
            pass


def current() -> ThreadBudget:
    """The budget in force (configured), else the plan from the environment (not applied)."""
    b = _active
    return b if b is not None else plan()


def ensure_configured() -> ThreadBudget:
    """Apply the environment's budget once if ``$MATCHER_THREADS`` is set and nothing was
    configured; return :func:`current`. Called by :class:`matcher.Engine`."""
    if _active is None and os.environ.get(ENV_TOTAL, "").strip():
        with _lock:
            pending = _active is None
        if pending:
            configure()
    return current()


def inference_threads() -> int:
    """Inference threads for an Engine created with ``threads=None``."""
    return ensure_configured().inference


def inference_streams() -> int:
    """Inference streams for an Engine created with ``threads=None`` and ``streams=None``."""
    return ensure_configured().streams


@contextlib.contextmanager
def budget(total: int | None = None, mode: str | None = None) -> Iterator[ThreadBudget]:
    """``with budget(2, "throughput") as b:`` configure for the block, then restore the previous
    budget (or none)."""
    before = _active
    b = configure(total, mode)
    try:
        yield b
    finally:
        if before is None:
            reset()
        else:
            configure(before.total, before.mode)


def limits_report() -> list[dict[str, Any]]:
    """What threadpoolctl sees now: ``[{user_api, internal_api, prefix, num_threads}]`` ([] if
    threadpoolctl is not installed). FAISS's own view is ``faiss.omp_get_max_threads()``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: p.get(k) for k in ("user_api", "internal_api", "prefix", "num_threads")}
            for p in threadpool_info()]
