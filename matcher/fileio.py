"""Crash-safe file writing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: no locking, no stale-file cleanup)
    fcntl = None  # type: ignore[assignment]

_TMP_SUFFIX = ".tmp"
_RAND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _stale_temps(parent: Path, name: str) -> list[Path]:
    """Temporary files an earlier, interrupted write_atomic of ``name`` left in ``parent``
    (``.NAME.XXXXXXXX.tmp``, exactly mkstemp's 8 random characters)."""
    prefix = f".{name}."
    out = []
    for entry in os.listdir(parent):
        mid = entry[len(prefix):-len(_TMP_SUFFIX)]
        if (entry.startswith(prefix) and entry.endswith(_TMP_SUFFIX) and len(mid) == 8
                and set(mid.lower()) <= _RAND_CHARS):
            out.append(parent / entry)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, never a mix.

    Writers of one directory are serialised by an exclusive ``flock`` on the directory (released
    by the kernel if the process dies), so under it no other write is in flight and a temporary
    file of ``path`` left by a killed writer is stale: it is removed before writing. At most one
    such file exists between a crash and the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            for stale in _stale_temps(path.parent, path.name):
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)  # releases the lock


def read_limited(path: str | os.PathLike, limit: int, *, too_large: type[Exception],
                 unreadable: type[Exception], what: str = "") -> bytes:
    """The bytes of ``path``: ``too_large`` (checked before reading) above ``limit`` bytes,
    ``unreadable`` for any OS error; ``what`` prefixes the path in the latter's message."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise too_large(f"{path}: {size} bytes exceeds {limit}")
        return path.read_bytes()
    except OSError as exc:
        raise unreadable(f"cannot read {what}{path}: {exc.strerror or exc}") from exc
