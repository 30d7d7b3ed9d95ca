"""Append-only audit trail: one JSON object per line, fsynced, never face data.

Used by watchlist screening (:mod:`matcher.screening`) and by gallery stores
(:class:`matcher.store.GalleryStore`: forget, remove, delete, purge). Each record gets the UTC
time, the OS user and the host; the caller adds the event's own fields. Files are created with
mode 0600 and only ever appended to (``O_APPEND``: concurrent writers do not interleave lines).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: Domain separation for :func:`subject_ref`.
_REF_PREFIX = b"matcher-audit-subject-v1\0"


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def user() -> str:
    """The OS user name (``uid:N`` where the container has no passwd entry)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  no passwd entry in some containers
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def subject_ref(subject_id: str) -> str:
    """A pseudonym of a subject id for the audit trail: SHA-256 (hex) of a fixed prefix and the
    UTF-8 id. Whoever knows the id can check the record; the trail itself does not hold it.
    (Ids drawn from a small space, such as document numbers, can be found by trying them all.)"""
    return hashlib.sha256(_REF_PREFIX + subject_id.encode("utf-8", "surrogatepass")).hexdigest()


def append(path: str | Path, event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Append one record ``{"event", "time_utc", "user", "host", **fields}`` to ``path`` and
    fsync it; returns the record."""
    record = {"event": event, "time_utc": now_utc(), "user": user(),
              "host": socket.gethostname(), **fields}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record
