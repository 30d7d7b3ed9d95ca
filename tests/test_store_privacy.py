"""Privacy operations of a gallery store: forget across galleries, audited remove / delete /
purge, encryption kept, failures reported (never silently skipped)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner

from matcher import audit
from matcher.cli import main as cli
from matcher.errors import InputError
from matcher.store import GalleryStore, StoreError

MODEL, HASH = "sface-2021dec", "04051a3a339f0527"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(st: GalleryStore) -> list[dict]:
    return [json.loads(x) for x in st.audit_path.read_text().splitlines()]


@pytest.fixture
def store(tmp_path):
    """Three flight galleries; TRAVELLER-1 is on two of them (2 + 1 templates)."""
    st = GalleryStore(tmp_path / "store")
    for i, name in enumerate(["CX880", "BA12", "LH400"]):
        g = st.create(name, MODEL, HASH)
        g.enroll_many([f"P{i}-{j}" for j in range(5)], _unit(5, i))
        st.save(name)
    st.get("CX880").enroll("TRAVELLER-1", _unit(2, 10))
    st.get("LH400").enroll("TRAVELLER-1", _unit(1, 11))
    st.save("CX880")
    st.save("LH400")
    return st


def test_forget_removes_the_subject_everywhere_and_on_disk(store):
    assert store.forget("TRAVELLER-1") == {"CX880": 2, "LH400": 1}
    fresh = GalleryStore(store.root)  # what is on disk
    for name in fresh.names():
        assert "TRAVELLER-1" not in fresh.get(name) and len(fresh.get(name)) == 5
    assert store.forget("TRAVELLER-1") == {}  # nothing left: still recorded
    recs = [r for r in _records(store) if r["event"] == "forget"]
    assert [r["removed"] for r in recs] == [{"CX880": 2, "LH400": 1}, {}]
    assert all(r["status"] == "complete" and r["galleries_searched"] == 3 for r in recs)
    ref = hashlib.sha256(b"matcher-audit-subject-v1\0TRAVELLER-1").hexdigest()
    assert recs[0]["subject_ref"] == ref == audit.subject_ref("TRAVELLER-1")
    text = store.audit_path.read_text()
    assert "TRAVELLER-1" not in text  # the trail holds no id in clear, no vectors
    assert all(len(line) < 1000 for line in text.splitlines())
    assert {"time_utc", "user", "host", "store"} <= set(recs[0])
    assert oct(os.stat(store.audit_path).st_mode & 0o777) == "0o600"


def test_forget_reports_a_gallery_it_cannot_open_and_still_does_the_rest(store):
    (store.root / "BROKEN.gallery").write_bytes(b"not a gallery")
    with pytest.raises(StoreError, match="BROKEN") as err:
        store.forget("TRAVELLER-1")
    assert set(err.value.failed) == {"BROKEN"}
    fresh = GalleryStore(store.root, audit=False)
    assert all("TRAVELLER-1" not in fresh.get(n) for n in ("CX880", "BA12", "LH400"))
    rec = _records(store)[-1]
    assert rec["status"] == "partial" and set(rec["failed"]) == {"BROKEN"}
    assert rec["removed"] == {"CX880": 2, "LH400": 1}


def test_forget_keeps_encryption(tmp_path):
    key = os.urandom(32)
    st = GalleryStore(tmp_path / "enc", key=key, require_encryption=True)
    st.create("CX880", MODEL, HASH).enroll("TRAVELLER-1", _unit(1, 3))
    st.save("CX880")
    assert st.forget("TRAVELLER-1") == {"CX880": 1}
    with pytest.raises(InputError, match="encrypted"):  # still encrypted: no key, no gallery
        GalleryStore(tmp_path / "enc", audit=False).get("CX880")
    again = GalleryStore(tmp_path / "enc", key=key, require_encryption=True, audit=False)
    assert "TRAVELLER-1" not in again.get("CX880")


def test_remove_delete_and_purge_are_audited(store):
    assert store.remove("BA12", ["P1-0", "NOBODY"]) == [True, False]
    store.get("BA12").enroll("SHORT-STAY", _unit(1, 20), expires_at=T0)
    store.save("BA12")
    store.get("LH400").expires_at = T0 - timedelta(hours=1)
    store.save("LH400")
    report = store.purge_expired(T0)
    assert report == {"galleries": ["LH400"], "subjects": {"BA12": ["SHORT-STAY"]}}
    assert store.delete("CX880") and not store.delete("CX880")
    events = [(r["event"], r.get("gallery")) for r in _records(store)]
    assert events == [("remove", "BA12"), ("delete_gallery", "LH400"), ("purge_expired", None),
                      ("delete_gallery", "CX880")]
    rm, purge = _records(store)[0], _records(store)[2]
    assert [s["removed"] for s in rm["subjects"]] == [True, False]
    assert purge["subjects_removed"] == {"BA12": 1} and purge["galleries_deleted"] == ["LH400"]
    assert "SHORT-STAY" not in store.audit_path.read_text()


def test_bad_arguments(store):
    with pytest.raises(InputError):
        store.forget("")
    with pytest.raises(InputError):
        store.remove("BA12", "P1-0")  # one string, not a list of ids


def test_cli_forget(store):
    res = CliRunner().invoke(cli, ["gallery", "forget", "TRAVELLER-1", "--store", str(store.root)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["removed"] == {"CX880": 2, "LH400": 1}
    (store.root / "BROKEN.gallery").write_bytes(b"x")
    res = CliRunner().invoke(cli, ["gallery", "forget", "P0-1", "--store", str(store.root)])
    assert res.exit_code == 2 and "BROKEN" in res.output
    assert "P0-1" not in GalleryStore(store.root, audit=False).get("CX880")


# ----------------------------------------------------------------- review findings
def test_remove_checks_every_id_before_changing_anything(store):
    with pytest.raises(InputError):
        store.remove("BA12", ["P1-0", None])
    assert "P1-0" in GalleryStore(store.root, audit=False).get("BA12")
    assert "P1-0" in store.get("BA12")


def test_purge_reports_a_gallery_it_cannot_open_and_still_audits(store):
    store.get("BA12").enroll("SHORT-STAY", _unit(1, 20), expires_at=T0)
    store.save("BA12")
    (store.root / "AAA.gallery").write_bytes(b"not a gallery")  # listed first
    with pytest.raises(StoreError, match="AAA") as err:
        store.purge_expired(T0)
    assert set(err.value.failed) == {"AAA"}
    assert "SHORT-STAY" not in GalleryStore(store.root, audit=False).get("BA12")
    rec = _records(store)[-1]
    assert rec["event"] == "purge_expired" and rec["status"] == "partial"
    assert rec["subjects_removed"] == {"BA12": 1} and set(rec["failed"]) == {"AAA"}


def _during_a_slow_save(store, monkeypatch, name: str, action, *args) -> None:
    """Run ``action(*args)`` in a thread while ``store.save(name)`` is held inside its file
    write, then let the save finish; both threads are joined."""
    import threading

    from matcher import gallery_file

    writing, release = threading.Event(), threading.Event()
    real = gallery_file.write_atomic
    calls = []

    def slow(path, data):
        calls.append(path)
        if len(calls) == 1:  # only the first write, the save under test, waits
            writing.set()
            release.wait(10)
        real(path, data)

    monkeypatch.setattr(gallery_file, "write_atomic", slow)
    saver = threading.Thread(target=store.save, args=(name,))
    saver.start()
    assert writing.wait(10)
    other = threading.Thread(target=action, args=args)
    other.start()
    release.set()
    saver.join(10)
    other.join(10)


def test_no_save_lands_after_a_delete(store, monkeypatch):
    """A save that was writing when delete() ran cannot bring the gallery back."""
    g = store.get("BA12")
    _during_a_slow_save(store, monkeypatch, "BA12", store.delete, "BA12")
    assert not (store.root / "BA12.gallery").exists() and "BA12" not in store.names()
    with pytest.raises(InputError, match="no gallery"):
        store.save("BA12")
    assert g.template_count == 5  # the object itself is untouched


def test_saves_land_in_call_order(store, monkeypatch):
    """forget() during a slow save: the file ends without the subject."""
    _during_a_slow_save(store, monkeypatch, "CX880", store.forget, "TRAVELLER-1")
    fresh = GalleryStore(store.root, audit=False)
    assert all("TRAVELLER-1" not in fresh.get(n) for n in fresh.names())
