"""The gallery's readers-writer lock: exclusion holds, and neither side starves the other."""

from __future__ import annotations

import threading
import time

from matcher.rwlock import RWLock


def _hammer(lock: RWLock, writers: int, readers: int, seconds: float) -> dict[str, int]:
    """Threads taking the lock in tight loops; checks exclusion on every acquisition."""
    stop = time.monotonic() + seconds
    state = {"readers": 0, "writers": 0}
    counts = {"read": 0, "write": 0, "violations": 0}
    guard = threading.Lock()

    def enter(kind: str) -> None:
        with guard:
            state[kind] += 1
            if state["writers"] > 1 or (state["writers"] and state["readers"]):
                counts["violations"] += 1

    def leave(kind: str) -> None:
        with guard:
            state[kind] -= 1

    def writer() -> None:
        while time.monotonic() < stop:
            lock.acquire_write()
            enter("writers")
            sum(range(2000))
            leave("writers")
            lock.release_write()
            counts["write"] += 1

    def reader() -> None:
        while time.monotonic() < stop:
            with lock.read():
                enter("readers")
                sum(range(200))
                leave("readers")
            counts["read"] += 1

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    threads += [threading.Thread(target=reader) for _ in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    return counts


def test_back_to_back_writers_do_not_starve_readers():
    # 2 threads enrolling in a loop beside 4 searching: the writer-preferring lock this replaced
    # let the readers through 4 times in 2 s (vs 72,591 writes)
    c = _hammer(RWLock(), writers=2, readers=4, seconds=2.0)
    assert c["violations"] == 0
    assert c["read"] > 200 and c["write"] > 200, c


def test_a_stream_of_readers_does_not_starve_a_writer():
    c = _hammer(RWLock(), writers=1, readers=6, seconds=2.0)
    assert c["violations"] == 0
    assert c["write"] > 50 and c["read"] > 200, c
