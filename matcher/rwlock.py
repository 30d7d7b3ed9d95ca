"""A readers-writer lock: many concurrent readers, one writer, writers not starved."""

from __future__ import annotations

import threading


class RWLock:
    """Searches share the lock; enrol/remove/save take it alone. A waiting writer blocks new
    readers, so a steady stream of searches cannot starve an enrolment.

    ``acquire_read``/``release_read`` are plain method calls on one mutex (no context manager,
    no condition wait unless a writer holds or wants the lock): a 1:N search of a flight-sized
    gallery takes a few microseconds, and the lock must not double that.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        self._mutex.acquire()
        try:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
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
            finally:
                self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
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
