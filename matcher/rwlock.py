"""A phase-fair readers-writer lock: many concurrent readers, one writer, neither starved."""

from __future__ import annotations

import threading


class RWLock:
    """Searches share the lock; enrol/remove/save take it alone.

    Phase-fair: a waiting writer blocks new readers (a steady stream of searches cannot starve an
    enrolment), and a writer's release admits every reader waiting at that moment before the next
    writer (back-to-back enrolments cannot starve the gates' searches: with the plain
    writer-preferring rule, 2 threads enrolling in a loop let 4 searching threads through 4 times
    in 60 s).

    ``acquire_read``/``release_read`` are plain method calls on one mutex (no context manager,
    no condition wait unless a writer holds or wants the lock): a 1:N search of a flight-sized
    gallery takes a few microseconds, and the lock must not double that.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0  # holding the lock shared (incl. admitted, not yet awake)
        self._writer = False
        self._waiting_writers = 0
        self._waiting_readers = 0
        self._phase = 0  # +1 at every writer release, which admits the waiting readers

    def acquire_read(self) -> None:
        self._mutex.acquire()
        try:
            if not self._writer and not self._waiting_writers:
                self._readers += 1
                return
            phase = self._phase
            self._waiting_readers += 1
            try:
                while self._phase == phase:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave no phantom reader behind
                if self._phase == phase:
                    self._waiting_readers -= 1
                else:  # admitted meanwhile: give the slot back
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()
                raise
            # release_write admitted this reader (counted it in _readers)
        finally:
            self._mutex.release()

    def release_read(self) -> None:
        self._mutex.acquire()
        self._readers -= 1
        if self._readers == 0 and self._waiting_writers:
            self._cond.notify_all()
        self._mutex.release()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            except BaseException:  # interrupted: readers queued behind this writer go ahead
                self._waiting_writers -= 1
                if not self._waiting_writers and not self._writer:
                    self._admit_readers()
                raise
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._admit_readers()

    def _admit_readers(self) -> None:
        """Let every waiting reader in, before any next writer (called holding the mutex)."""
        self._phase += 1
        self._readers += self._waiting_readers
        self._waiting_readers = 0
        self._cond.notify_all()

    def read(self) -> _Held:
        """Context manager holding the lock shared."""
        return _Held(self.acquire_read, self.release_read)

    def write(self) -> _Held:
        """Context manager holding the lock exclusively."""
        return _Held(self.acquire_write, self.release_write)


class _Held:
    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire, release) -> None:
        self._acquire, self._release = acquire, release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc: object) -> None:
        self._release()
