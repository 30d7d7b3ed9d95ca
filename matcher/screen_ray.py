"""Screening extraction on Ray workers (``matcher screen --ray ADDRESS``).

Each worker is a Ray actor holding its own :class:`~matcher.Engine` with ``threads`` inference
threads (and reserving that many CPUs), so the thread budget holds per worker. The driver reads
each probe file (so the workers need no shared filesystem), sends batches to whichever worker is
free, and receives faces and vectors back; searching the watchlist, writing rows in probe order,
checkpointing and the audit line stay in the driver, exactly as in a local run
(:func:`matcher.screening.screen`). Output is therefore byte-identical to a local run, and a run
interrupted under Ray can be resumed locally or under Ray.

A worker that dies (node lost, out of memory) is restarted by Ray and its batch retried, up to
:data:`MAX_RETRIES` times; extraction is idempotent, so a retry cannot duplicate a row. A batch
that keeps killing workers ends the run with :class:`WorkerError` naming its probes; everything
before it is checkpointed. So does :data:`matcher.screening.BATCH_TIMEOUT` seconds without any
batch finishing (hung workers): the run never waits forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

try:
    import ray
    import ray.exceptions as _rex
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("matcher screen --ray needs Ray: pip install 'matcher[ray]'") from exc

from matcher import screening
from matcher.distributed import connect
from matcher.errors import InputError, MatcherError
from matcher.image import EncodedImage, read_encoded
from matcher.screening import Probe, ProbeResult, WorkerError, batch_names, extract

#: Restarts of a dead worker actor, and retries of the batch it was running.
MAX_RETRIES = 3
#: Seconds to wait for every worker to load its engine before giving up (CPUs may be busy).
START_TIMEOUT = 300.0
#: Batches in flight per worker (one running, one queued, so a worker never waits on the driver).
IN_FLIGHT = 2
#: Probe file bytes the driver keeps in flight (read, sent, result not yet received) at once:
#: 1 GiB. Files are capped at :data:`matcher.image.MAX_ENCODED_BYTES` each, so without it a folder
#: of large scans could hold ``IN_FLIGHT x workers x batch_size x 256 MB`` on the driver. A batch
#: larger than the budget still goes, alone. (The next batch, read and waiting for room, comes on
#: top.)
MAX_INFLIGHT_BYTES = 1 << 30


@ray.remote(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)
class _Extractor:
    """One screening worker: an Engine inside a Ray actor."""

    def __init__(self, engine_kwargs: dict[str, Any], quality: Any) -> None:
        from matcher.engine import Engine

        self.engine = Engine(**engine_kwargs)
        self.quality = quality

    def model(self) -> tuple[str, str]:
        return self.engine.model, self.engine.model_hash

    def extract(self, probes: list[Probe]) -> tuple[tuple[str, str] | None, list[ProbeResult]]:
        return extract(self.engine, probes, quality=self.quality)


def data_bytes(probes: Sequence[Probe]) -> int:
    """Encoded bytes the probes carry."""
    return sum(len(p.data.data) for p in probes if p.data is not None)


def with_data(probes: Sequence[Probe]) -> list[Probe]:
    """The probes with their files read (a read failure becomes the probe's error, with the
    message a local run would give)."""
    out = []
    for p in probes:
        if p.path is None or p.error is not None:
            out.append(p)
            continue
        try:
            out.append(p._replace(data=EncodedImage(p.path, read_encoded(p.path))))
        except MatcherError as exc:
            out.append(p._replace(error=f"{type(exc).__name__}: {exc}"))
    return out


class RayExtraction:
    """``workers`` Ray actors with an Engine each; :meth:`results` maps probe batches in order.

    ``address``: see :func:`matcher.distributed.connect`. ``workers=None``: as many as the
    cluster's free CPUs allow at ``threads`` CPUs each. ``max_inflight_bytes``: see
    :data:`MAX_INFLIGHT_BYTES`; :attr:`peak_inflight_bytes` is the most the run held."""

    def __init__(self, address: str | None, workers: int | None, threads: int,
                 engine_options: dict[str, Any], quality: Any, *,
                 max_inflight_bytes: int | None = None) -> None:
        if type(threads) is not int or threads < 1:
            raise InputError(f"threads must be a positive int, got {threads!r}")
        if max_inflight_bytes is None:
            max_inflight_bytes = MAX_INFLIGHT_BYTES
        if type(max_inflight_bytes) is not int or max_inflight_bytes < 1:
            raise InputError(f"max_inflight_bytes must be a positive int, got "
                             f"{max_inflight_bytes!r}")
        self.max_inflight_bytes = max_inflight_bytes
        self.peak_inflight_bytes = 0
        self.started = connect(address)
        try:
            free = int(ray.available_resources().get("CPU", 0))
            if workers is None:
                workers = max(1, free // threads)
            if type(workers) is not int or workers < 1:
                raise InputError(f"workers must be a positive int, got {workers!r}")
            self.workers, self.threads = workers, threads
            self.address = address
            kwargs = {**engine_options, "threads": threads}
            self.actors = [_Extractor.options(num_cpus=threads).remote(kwargs, quality)
                           for _ in range(workers)]
            self.model = self._start(free)
        except BaseException:
            self.close()
            raise

    def _start(self, free: int) -> tuple[str, str]:
        refs = [a.model.remote() for a in self.actors]
        ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT)
        if waiting:
            raise WorkerError(
                f"{len(waiting)} of {self.workers} Ray workers ({self.threads} CPU each) did not "
                f"start within {START_TIMEOUT:.0f} s; the cluster had {free} free CPUs: ask for "
                "fewer --workers or --threads")
        try:
            models = ray.get(ready)
        except _rex.RayError as exc:
            raise WorkerError(f"a Ray worker failed to load its engine: {_cause(exc)}") from None
        if len(set(models)) != 1:
            raise WorkerError(f"Ray workers make different templates: {sorted(set(models))} "
                              "(different model files or matcher versions on the nodes)")
        return models[0]

    def results(self, batches: Sequence[list[Probe]]
                ) -> Iterator[tuple[tuple[str, str] | None, list[ProbeResult]]]:
        """Extraction results of ``batches``, in order. A batch goes to the least-loaded worker;
        at most :data:`IN_FLIGHT` batches per worker, and :attr:`max_inflight_bytes` of probe
        files, are in flight or waiting to be yielded."""
        load = [0] * self.workers
        inflight: dict[Any, tuple[int, int, int]] = {}  # ref -> (batch index, worker, bytes)
        done: dict[int, Any] = {}
        held = 0  # probe bytes of the batches in flight
        submitted = yielded = 0
        ready_batch: list[Probe] | None = None  # the next batch, read but not yet sent
        limit = IN_FLIGHT * self.workers
        while yielded < len(batches):
            while submitted < len(batches) and len(inflight) + len(done) < limit:
                if ready_batch is None:
                    ready_batch = with_data(batches[submitted])
                size = data_bytes(ready_batch)
                if inflight and held + size > self.max_inflight_bytes:
                    break  # over budget: wait for a batch to come back first
                w = min(range(self.workers), key=load.__getitem__)
                ref = self.actors[w].extract.remote(ready_batch)
                ready_batch = None
                inflight[ref] = (submitted, w, size)
                load[w] += 1
                held += size
                self.peak_inflight_bytes = max(self.peak_inflight_bytes, held)
                submitted += 1
            if yielded not in done:
                limit_s = screening.BATCH_TIMEOUT
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=limit_s)
                if not ready:
                    first = batches[yielded][0].name if batches[yielded] else "?"
                    raise WorkerError(f"no batch finished within {limit_s:g} s (Ray workers "
                                      f"hang?), waiting for the batch from probe {first}; the "
                                      "checkpoint holds every probe before it (rerun with "
                                      "--resume)")
                (ref,) = ready
                i, w, size = inflight.pop(ref)
                load[w] -= 1
                held -= size
                done[i] = self._get(ref, batches[i])
                del ref, ready  # the driver's last references: Ray may free the sent bytes
                continue
            yield done.pop(yielded)
            yielded += 1

    def _get(self, ref: Any, batch: list[Probe]) -> Any:
        try:
            return ray.get(ref)
        except _rex.RayError as exc:
            raise WorkerError(f"Ray workers failed {MAX_RETRIES + 1} times on the batch of probes "
                              f"{batch_names(batch)}: {_cause(exc)}; the checkpoint holds every "
                              "probe before it (rerun with --resume)") from None

    def describe(self) -> dict[str, Any]:
        """The executor as the audit line records it."""
        return {"kind": "ray", "address": self.address, "workers": self.workers,
                "threads": self.threads}

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001, S110  already dead: nothing to release
                pass
        self.actors = []
        if self.started:
            ray.shutdown()
            self.started = False


def _cause(exc: BaseException) -> str:
    """The worker-side error in one line: the task's own exception, else the last line of Ray's
    report (for a failed actor start, the exception its ``__init__`` raised)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, _rex.RayError):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]
