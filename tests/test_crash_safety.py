"""Crash safety of Gallery.save: SIGKILL a process while it saves, at random moments.

A forked child saves two different galleries (A: 20,000 x 128, B: 12,000 x 128, different
subjects) alternately to one path, forever; the parent kills it with SIGKILL after a random
delay spread over the whole save cycle (serialise, write, fsync, rename, directory fsync), 50+
times. After every kill the file must load, and be exactly A or exactly B (the SHA-256 of the
file bytes and the set of subject ids both match one of them).

Temporary files: a killed writer can leave its ``.NAME.XXXXXXXX.tmp``; the next save removes it
(matcher.fileio.write_atomic, under a directory flock), so after any kill at most one is left,
and after a completed save none. Nothing else is left in the directory (no lock file: the lock
is on the directory itself).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from matcher.gallery import Gallery

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux",
                                reason="needs fork and SIGKILL (Linux)")

KILLS = 50
MH = "0123456789abcdef"


def _gallery(prefix: str, n: int, seed: int) -> Gallery:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    g = Gallery("sface-2021dec", MH, kind="flat", dim=128)
    g.enroll_many([f"{prefix}{i:06d}" for i in range(n)], v)
    return g


def _temps(d: Path, name: str) -> list[str]:
    return sorted(p for p in os.listdir(d) if p.startswith(f".{name}.") and p.endswith(".tmp"))


def test_sigkill_during_save_leaves_old_or_new(tmp_path: Path) -> None:
    ga, gb = _gallery("A", 20_000, 1), _gallery("B", 12_000, 2)
    path = tmp_path / "flight.gallery"
    t0 = time.perf_counter()
    ga.save(path)
    cycle = time.perf_counter() - t0  # one save of A, the larger gallery
    ha = hashlib.sha256(path.read_bytes()).hexdigest()
    gb.save(path)
    hb = hashlib.sha256(path.read_bytes()).hexdigest()
    from matcher.fileio import write_atomic
    blob = gb.to_bytes()
    t0 = time.perf_counter()
    write_atomic(path, blob)  # the write / fsync / rename part alone
    write_time = max(time.perf_counter() - t0, 0.002)
    assert ha != hb
    ids = {ha: set(ga.subject_ids()), hb: set(gb.subject_ids())}

    rng = random.Random(7)
    seen = {ha: 0, hb: 0}
    max_temps = 0
    deadline = time.monotonic() + 40
    kills = 0
    loads = 0
    on_disk = hb
    while kills < KILLS and time.monotonic() < deadline:
        # Half the kills at a random moment of the whole save (serialise + write + fsync +
        # rename), half aimed at the write / fsync / rename window: the child reports through a
        # pipe when serialisation is done and the file writing starts.
        first, second = (gb, ga) if on_disk == ha else (ga, gb)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: save the other gallery, then alternate, until killed
            try:
                os.close(rfd)
                from matcher import gallery_file
                real = gallery_file.write_atomic

                def signalled(p, data, wfd=wfd, real=real):
                    os.write(wfd, b"w")
                    real(p, data)
                gallery_file.write_atomic = signalled
                while True:
                    first.save(path)
                    second.save(path)
            finally:
                os._exit(1)
        os.close(wfd)
        if kills % 2:
            os.read(rfd, 1)  # serialised; now writing
            time.sleep(rng.uniform(0.0, 1.5 * write_time))
        else:  # up to two saves in: the kill may land before, during or after a rename
            time.sleep(rng.uniform(0.0, 2.2 * cycle))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(rfd)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        kills += 1
        data = path.read_bytes()
        h = hashlib.sha256(data).hexdigest()
        assert h in ids, f"kill {kills}: file is neither the old nor the new gallery"
        # Saves of a gallery are byte-for-byte deterministic, so a hash match means the file
        # is that complete gallery; a full load proves it on every change and every 5th kill.
        if h != on_disk or kills % 5 == 0:
            loaded = Gallery.from_bytes(data)
            assert set(loaded.subject_ids()) == ids[h]
            assert loaded.template_count == len(ids[h])
            loads += 1
        on_disk = h
        seen[h] += 1
        temps = _temps(tmp_path, path.name)
        max_temps = max(max_temps, len(temps))
        assert len(temps) <= 1, f"kill {kills}: temporary files accumulate: {temps}"
        assert set(os.listdir(tmp_path)) <= {path.name, *temps}
    assert kills >= KILLS, f"only {kills} kills within the time limit"
    assert seen[ha] and seen[hb], f"kills never caught one of the two contents: {seen}"
    # The next completed save removes whatever a killed writer left.
    ga.save(path)
    assert _temps(tmp_path, path.name) == []
    assert os.listdir(tmp_path) == [path.name]
    print(f"\n{kills} kills, save of A {cycle * 1000:.0f} ms, file was A {seen[ha]}x / "
          f"B {seen[hb]}x, {loads} full loads, at most {max_temps} temp file left after a kill")
