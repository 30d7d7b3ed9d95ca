"""Screening on local worker processes (matcher.screen_local): dead workers replaced and their
batch found, hung workers killed, engine start errors typed."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

import pytest

from matcher import screen_local, screening
from matcher.errors import InputError
from matcher.screening import Probe, WorkerError, screen

SPAWN = get_context("spawn")


class FlakyPool:
    """Runs batches in this process; a batch holding a poisoned probe breaks the pool (as a
    worker killed by the OOM killer would) while ``deaths`` lasts."""

    def __init__(self, poison: str, deaths: list[int], log: list[list[str]]) -> None:
        self.poison, self.deaths, self.log = poison, deaths, log

    def submit(self, fn, batch):
        self.log.append([p.name for p in batch])
        f: Future = Future()
        if self.deaths[0] > 0 and any(p.name == self.poison for p in batch):
            self.deaths[0] -= 1
            f.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            f.set_result(fn(batch))
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.fixture
def flaky(monkeypatch, engine):
    """Make screen()'s worker pool a FlakyPool over the session engine; returns its controls."""
    deaths, log = [0], []
    monkeypatch.setattr(screen_local, "_ENGINE", engine)
    monkeypatch.setattr(screen_local.ProcessExtraction, "_spawn",
                        lambda self: FlakyPool("group/two.png", deaths, log))
    return deaths, log


@pytest.fixture(scope="module")
def local_out(tmp_path_factory, watchlist, mixed_dir):
    out = tmp_path_factory.mktemp("ref") / "hits.csv"
    screen(watchlist, mixed_dir, out, workers=1, batch_size=1, audit=False)
    return out


def test_a_worker_death_is_retried_and_the_output_unchanged(tmp_path, watchlist, mixed_dir,
                                                            local_out, flaky):
    deaths, log = flaky
    deaths[0] = 2
    out = tmp_path / "hits.csv"
    screen(watchlist, mixed_dir, out, workers=2, batch_size=1, audit=False)
    assert out.read_bytes() == local_out.read_bytes()
    # after a death the batches that were in flight run again one at a time
    first = next(i for i, b in enumerate(log) if b == ["group/two.png"])
    assert log.count(["group/two.png"]) == 3
    assert all(len(b) == 1 for b in log[first:])


def test_a_batch_that_keeps_killing_workers_is_named(tmp_path, watchlist, mixed_dir, flaky):
    deaths, log = flaky
    deaths[0] = 99
    out = tmp_path / "hits.csv"
    with pytest.raises(WorkerError, match=r"died 4 times on the batch of probes group/two.png"):
        screen(watchlist, mixed_dir, out, workers=2, batch_size=1, audit=False)
    state = json.loads(out.with_name("hits.csv.progress").read_text())
    names = [p.name for p in screening.open_probes(mixed_dir).probes]
    assert state["done"] == names.index("group/two.png")  # everything before it is kept
    assert log.count(["group/two.png"]) == 1 + 1 + screen_local.MAX_RETRIES


def _gone(pid: int, timeout: float = 60.0) -> bool:
    """The process is gone or a zombie (killed; reaped by whoever waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def _pool(initializer, *args):
    return lambda: ProcessPoolExecutor(1, mp_context=SPAWN, initializer=initializer,
                                       initargs=args)


def test_real_worker_deaths_end_in_a_worker_error():
    # every worker dies at start (os._exit in its initializer): a broken pool each time
    ex = screen_local.ProcessExtraction(1, 1, {}, None, pool_factory=_pool(os._exit, 3))
    try:
        with pytest.raises(WorkerError, match="died 4 times on the batch of probes a .. b"):
            list(ex.results([[Probe("a"), Probe("b")]]))
        assert ex.restarts == screen_local.MAX_RETRIES  # the 4th death ends it
    finally:
        ex.close(completed=False)


def test_hung_workers_are_a_worker_error_and_are_killed(monkeypatch):
    monkeypatch.setattr(screening, "BATCH_TIMEOUT", 1.0)
    ex = screen_local.ProcessExtraction(1, 1, {}, None, pool_factory=_pool(time.sleep, 3600))
    procs = []
    try:
        t = time.monotonic()
        with pytest.raises(WorkerError, match="no batch finished within 1 s.*probes a .. a"):
            list(ex.results([[Probe("a")]]))
        assert time.monotonic() - t < 30
        procs = list(ex.pool._processes.values())
        assert procs and all(p.is_alive() for p in procs)
    finally:
        ex.close(completed=False)
    for p in procs:  # killed, so the interpreter can exit (it joins pool workers at exit)
        p.join(60)  # a worker still importing from a cold disk dies when its read completes
        assert not p.is_alive() or _gone(p.pid), p


def test_an_engine_that_cannot_start_in_workers_raises_its_own_error(tmp_path, watchlist,
                                                                     mixed_dir):
    for workers in (1, 2):
        with pytest.raises(InputError, match="precision"):
            screen(watchlist, mixed_dir, tmp_path / f"w{workers}.csv", workers=workers,
                   engine_options={"precision": "fp8"}, audit=False)


def test_an_engine_object_runs_in_process_only(tmp_path, watchlist, mixed_dir, engine):
    s = screen(watchlist, mixed_dir, tmp_path / "a.csv", engine=engine, audit=False)
    assert s.complete  # workers default to 1 with an engine
    for extra in ({"workers": 2}, {"ray_address": "local"}, {"engine_options": {}}):
        with pytest.raises(InputError, match="in-process only"):
            screen(watchlist, mixed_dir, tmp_path / "b.csv", engine=engine, **extra)
