"""Screening extraction in local worker processes (``matcher screen --workers N``, N > 1).

Each worker is a spawned process holding its own :class:`~matcher.Engine`; batches go to the
workers, at most two per worker in flight, and come back in order, while the parent searches,
writes and checkpoints (:func:`matcher.screening.screen`).

Failures are bounded and typed, as with Ray workers (:mod:`matcher.screen_ray`):

- an engine that cannot start in a worker raises the engine's own error in the parent (the same
  error an in-process run gives), or :class:`WorkerError` quoting it;
- a worker that dies (out of memory, killed) breaks the pool: the pool is replaced and the
  batches that were in flight are run again one at a time, so the batch that kills a worker alone
  is found; after :data:`MAX_RETRIES` such deaths on one batch the run ends with
  :class:`WorkerError` naming its probes (extraction is idempotent: a retry repeats no row);
- no batch finishing within :data:`matcher.screening.BATCH_TIMEOUT` seconds ends the run with
  :class:`WorkerError`;
- :meth:`ProcessExtraction.close` kills the workers unless the run completed, so a hung worker
  never keeps the process from exiting.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from matcher import screening
from matcher.errors import MatcherError
from matcher.screening import Probe, ProbeResult, WorkerError, batch_names, extract

#: Worker deaths tolerated on one batch (run alone) before the run ends with WorkerError.
MAX_RETRIES = 3
#: Batches in flight per worker (one running, one queued).
IN_FLIGHT = 2
#: Python 3.10's ``Future.result`` timeout is not the builtin TimeoutError (it is from 3.11).
_TIMEOUTS = (TimeoutError, concurrent.futures.TimeoutError)

_ENGINE: Any = None
_QUALITY: Any = None
_START_ERROR: BaseException | None = None

Result = tuple[tuple[str, str] | None, list[ProbeResult]]


def _worker_init(engine_kwargs: dict[str, Any], quality: Any = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and checkpoints
    global _ENGINE, _QUALITY, _START_ERROR
    try:
        from matcher.engine import Engine

        _ENGINE = Engine(**engine_kwargs)
        _QUALITY = quality
    except Exception as exc:  # noqa: BLE001  reported by the first batch, not as a broken pool
        _START_ERROR = exc


def _worker_extract(probes: list[Probe]) -> Result:
    if _START_ERROR is not None:
        if isinstance(_START_ERROR, MatcherError):
            raise _START_ERROR
        raise WorkerError(f"a worker's engine failed to start: "
                          f"{type(_START_ERROR).__name__}: {_START_ERROR}")
    return extract(_ENGINE, probes, quality=_QUALITY)


class ProcessExtraction:
    """``workers`` spawned processes with an Engine each; :meth:`results` maps batches in order.

    ``pool_factory`` (tests): makes the executor instead of a spawn-context process pool."""

    def __init__(self, workers: int, threads: int, engine_options: dict[str, Any],
                 quality: Any, *, pool_factory: Callable[[], Any] | None = None) -> None:
        self.workers, self.threads = workers, threads
        self._kwargs = {**engine_options, "threads": threads}
        self._quality = quality
        self._factory = pool_factory or self._spawn
        self.restarts = 0
        self.pool = self._factory()

    def _spawn(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                   initializer=_worker_init,
                                   initargs=(self._kwargs, self._quality))

    def describe(self) -> dict[str, Any]:
        """The executor as the audit line records it."""
        return {"kind": "local", "workers": self.workers, "threads": self.threads}

    def results(self, batches: Sequence[list[Probe]]) -> Iterator[Result]:
        """Extraction results of ``batches``, in order."""
        pending: deque[tuple[int, Future]] = deque()  # (batch index, future), in batch order
        suspects: set[int] = set()  # in flight when a worker died: re-run one at a time
        deaths: dict[int, int] = {}  # worker deaths while the batch ran alone
        nxt = 0
        while nxt < len(batches) or pending:
            window = 1 if (pending and pending[0][0] in suspects) or nxt in suspects \
                else IN_FLIGHT * self.workers
            while nxt < len(batches) and len(pending) < window:
                pending.append((nxt, self.pool.submit(_worker_extract, batches[nxt])))
                nxt += 1
            i, fut = pending[0]
            try:
                res = fut.result(timeout=screening.BATCH_TIMEOUT)
            except _TIMEOUTS:
                raise WorkerError(
                    f"no batch finished within {screening.BATCH_TIMEOUT:g} s (worker processes "
                    f"hang?), waiting for the batch of probes {batch_names(batches[i])}; the "
                    "checkpoint holds every probe before it (rerun with --resume)") from None
            except BrokenProcessPool:
                if len(pending) == 1:
                    deaths[i] = deaths.get(i, 0) + 1
                    if deaths[i] > MAX_RETRIES:
                        raise WorkerError(
                            f"worker processes died {deaths[i]} times on the batch of probes "
                            f"{batch_names(batches[i])} (out of memory? killed?); the checkpoint "
                            "holds every probe before it (rerun with --resume)") from None
                suspects.update(j for j, _ in pending)
                nxt = pending[0][0]  # resubmit everything that was in flight, in order
                pending.clear()
                self._restart()
                continue
            pending.popleft()
            suspects.discard(i)
            yield res

    def _restart(self) -> None:
        self._kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self.pool = self._factory()

    def _kill(self) -> None:
        kill = getattr(self.pool, "kill_workers", None)  # Python >= 3.14
        if kill is not None:
            kill()
            return
        # Before 3.14 the executor offers no way to stop a busy worker; its process table is
        # the only handle (a dict of multiprocessing.Process, or None once shut down).
        for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except (OSError, ValueError, AttributeError):  # already gone / closed
                pass

    def close(self, completed: bool) -> None:
        """Release the workers: wait for them after a completed run, else kill them."""
        if not completed:
            self._kill()
        self.pool.shutdown(wait=completed, cancel_futures=True)
