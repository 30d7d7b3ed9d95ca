"""Galleries and 1:N identification: exactness, removal, persistence, concurrency, stores."""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import matcher
from matcher.errors import (
    CalibrationError,
    GalleryFileError,
    InputError,
    ModelMismatchError,
    TamperedError,
    WrongKeyError,
)
from matcher.gallery import Gallery
from matcher.store import GalleryStore

MODEL, HASH = "sface-2021dec", "0123456789abcdef"
KINDS = ["flat", "hnsw", "ivf", "IVF64,SQfp16"]
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def unit(rng, n, d=64):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def tpl(v, model=MODEL, h=HASH):
    return matcher.Template(v, model=model, model_hash=h)


def brute(vectors, owners, q, k):
    """Fused (max per subject) top-k by brute force."""
    s = vectors @ q
    best: dict[str, float] = {}
    for sc, o in zip(s.tolist(), owners):
        best[o] = max(best.get(o, -2.0), sc)
    return sorted(best.items(), key=lambda x: (-x[1], x[0]))[:k]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n_subj, d = 3000, 64
    vecs = unit(rng, 2 * n_subj, d)  # two templates per subject
    owners = [f"S{i % n_subj:05d}" for i in range(2 * n_subj)]
    # probes: noisy copies of some templates (mated) and fresh vectors (non-mated)
    idx = rng.choice(len(vecs), 40, replace=False)
    probes = vecs[idx] + 0.05 * rng.normal(size=(40, d)).astype(np.float32)
    probes = np.concatenate([probes, unit(rng, 10, d)])
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return vecs, owners, probes


def build(kind, vecs, owners):
    g = Gallery(MODEL, HASH, kind=kind)
    g.enroll_many(owners, vecs)
    return g


@pytest.mark.parametrize("kind", KINDS)
def test_results_equal_brute_force(kind, data):
    vecs, owners, probes = data
    g = build(kind, vecs, owners)
    assert len(g) == 3000 and g.template_count == 6000
    results = g.identify_many(probes, k=5, threshold=0.5)
    agree = 0
    for q, r in zip(probes, results):
        exp = brute(vecs, owners, q, 5)
        got = [(c.subject_id, c.score) for c in r.candidates]
        assert [c.rank for c in r.candidates] == [1, 2, 3, 4, 5]
        for sid, sc in got:  # every reported score is exact
            mine = max(float(vecs[i] @ q) for i, o in enumerate(owners) if o == sid)
            assert sc == pytest.approx(mine, abs=1e-5)
        agree += got[0][0] == exp[0][0]
        if kind == "flat":
            assert [s for s, _ in got] == [s for s, _ in exp]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in exp], atol=1e-5)
    assert agree == len(probes) if kind == "flat" else agree >= 40  # all mates found at rank 1


@pytest.mark.parametrize("kind", KINDS)
def test_removed_subject_never_returns(kind, data, tmp_path):
    vecs, owners, probes = data
    g = build(kind, vecs, owners)
    target = g.identify(tpl(probes[0]), k=1, threshold=0.5).candidates[0].subject_id
    assert g.remove(target) and not g.remove(target) and target not in g
    for r in g.identify_many(probes, k=20, threshold=0.5):
        assert target not in [c.subject_id for c in r.candidates]
    # the mate of probe 0 has gone: probe 0 still gets an answer, just another subject
    g.save(tmp_path / "g.gallery")
    g2 = Gallery.load(tmp_path / "g.gallery")
    assert target not in g2 and g2.template_count == 5998
    for r in g2.identify_many(probes, k=20, threshold=0.5):
        assert target not in [c.subject_id for c in r.candidates]
    fresh = unit(np.random.default_rng(9), 1)
    g2.enroll(target, fresh)  # re-enrol works
    assert g2.identify(tpl(fresh[0]), k=1, threshold=0.5).candidates[0].subject_id == target


def test_save_load_round_trip_and_encryption(data, tmp_path):
    vecs, owners, probes = data
    g = build("flat", vecs[:400], owners[:400])
    g.enroll("VIP", vecs[400:402], metadata={"flight": "CX880", "seat": "1A"}, expires_at=T0)
    key = os.urandom(32)
    g.save(tmp_path / "plain.gallery")
    g.save(tmp_path / "secret.gallery", key=key)
    for g2 in (Gallery.load(tmp_path / "plain.gallery"),
               Gallery.load(tmp_path / "secret.gallery", key=key, require_encryption=True)):
        assert g2.info()["subjects"] == g.info()["subjects"]
        assert g2.subject("VIP").metadata == {"flight": "CX880", "seat": "1A"}
        assert g2.subject("VIP").expires_at == T0
        for a, b in zip(g.identify_many(probes, 5, threshold=0.3),
                        g2.identify_many(probes, 5, threshold=0.3)):
            assert a.candidates == b.candidates
    assert b"CX880" not in (tmp_path / "secret.gallery").read_bytes()  # encrypted at rest
    with pytest.raises(WrongKeyError):
        Gallery.load(tmp_path / "secret.gallery", key=os.urandom(32))
    with pytest.raises(InputError):
        Gallery.load(tmp_path / "secret.gallery")
    with pytest.raises(GalleryFileError, match="required"):
        Gallery.load(tmp_path / "plain.gallery", require_encryption=True)


def test_corrupt_files_give_typed_errors_and_keep_the_old_file(data, tmp_path, monkeypatch):
    vecs, owners, _ = data
    g = build("flat", vecs[:100], owners[:100])
    path = tmp_path / "g.gallery"
    g.save(path)
    good = path.read_bytes()
    rng = random.Random(1)
    for cut in (0, 5, 40, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(GalleryFileError):
            Gallery.load(path)
    for _ in range(30):
        bad = bytearray(good)
        bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(bad))
        with pytest.raises(GalleryFileError):
            Gallery.load(path)
    key = os.urandom(32)
    g.save(path, key=key)
    enc = bytearray(path.read_bytes())
    enc[60] ^= 1
    import hashlib

    enc[-32:] = hashlib.sha256(bytes(enc[:-32])).digest()  # checksum fixed up: GCM still catches it
    path.write_bytes(bytes(enc))
    with pytest.raises(TamperedError):
        Gallery.load(path, key=key)
    with pytest.raises(GalleryFileError):
        Gallery.load(tmp_path / "missing.gallery")
    # A save that fails half-way leaves the previous file intact.
    path.write_bytes(good)
    g.enroll("NEW", vecs[200:201])
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        g.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good and "NEW" not in Gallery.load(path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_stress_equals_sequential_replay(data):
    vecs, owners, probes = data
    rng = np.random.default_rng(5)
    pool = {f"P{i:04d}": unit(rng, 1, vecs.shape[1]) for i in range(300)}
    g = Gallery(MODEL, HASH, kind="flat")
    g.enroll_many(owners[:2000], vecs[:2000])
    log, log_lock, errors = [], threading.Lock(), []
    stop = time.monotonic() + 3.0
    all_vec = {o: [] for o in set(owners[:2000])}
    for o, v in zip(owners[:2000], vecs[:2000]):
        all_vec[o].append(v)
    all_vec.update({k: [v[0]] for k, v in pool.items()})

    def writer(seed):
        r = random.Random(seed)
        while time.monotonic() < stop:
            sid = r.choice(list(pool))
            with log_lock:  # fixes the order of accepted operations for the replay
                if r.random() < 0.6:
                    g.enroll(sid, pool[sid], replace=True)
                    log.append(("enroll", sid))
                else:
                    log.append(("remove", sid, g.remove(sid)))

    def reader(seed):
        r = random.Random(seed)
        try:
            while time.monotonic() < stop:
                q = probes[r.randrange(len(probes))]
                res = g.identify(tpl(q), k=10, threshold=0.5)
                for c in res.candidates:  # no torn or phantom result: scores are exact
                    exact = max(float(v @ q) for v in all_vec[c.subject_id])
                    assert abs(c.score - exact) < 1e-5
                scores = [c.score for c in res.candidates]
                assert scores == sorted(scores, reverse=True)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=reader, args=(10 + i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(log) > 50
    replay = Gallery(MODEL, HASH, kind="flat")
    replay.enroll_many(owners[:2000], vecs[:2000])
    for op in log:
        if op[0] == "enroll":
            replay.enroll(op[1], pool[op[1]], replace=True)
        else:
            assert replay.remove(op[1]) == op[2]
    assert sorted(replay.subject_ids()) == sorted(g.subject_ids())
    for a, b in zip(g.identify_many(probes, 10, threshold=0.5),
                    replay.identify_many(probes, 10, threshold=0.5)):
        assert [(c.subject_id, round(c.score, 5)) for c in a.candidates] == \
               [(c.subject_id, round(c.score, 5)) for c in b.candidates]


def test_expiry_and_purge():
    rng = np.random.default_rng(2)
    g = Gallery(MODEL, HASH)
    g.enroll("A", unit(rng, 1), expires_at=T0)
    g.enroll("B", unit(rng, 1), expires_at=T0 + timedelta(hours=2))
    g.enroll("C", unit(rng, 1))
    assert g.purge_expired(T0 - timedelta(seconds=1)) == []
    assert g.purge_expired(T0) == ["A"]
    assert sorted(g.subject_ids()) == ["B", "C"] and g.template_count == 2
    with pytest.raises(InputError):
        g.purge_expired(datetime(2026, 1, 1))  # naive


def test_enrolment_validation():
    rng = np.random.default_rng(3)
    g = Gallery(MODEL, HASH)
    for bad in ("", " A", "A\n", "x" * 129, 12, None):
        with pytest.raises(InputError):
            g.enroll(bad, unit(rng, 1))
    with pytest.raises(InputError):
        g.enroll("A", unit(rng, 1), metadata={"x": object()})
    with pytest.raises(InputError):
        g.enroll("A", unit(rng, 1), metadata={"x": "y" * 20000})
    with pytest.raises(matcher.errors.TemplateError):
        g.enroll("A", np.full((1, 64), np.nan, np.float32))
    with pytest.raises(matcher.errors.TemplateError):
        g.enroll("A", np.ones((1, 64), np.float32))  # not unit length
    with pytest.raises(ModelMismatchError):
        g.enroll("A", tpl(unit(rng, 1)[0], h="fedcba9876543210"))
    with pytest.raises(ModelMismatchError):
        g.enroll("A", tpl(unit(rng, 1)[0], model="other"))
    with pytest.raises(InputError):
        g.enroll("A", np.zeros((4, 4), np.uint8))  # an image, but no engine
    g.enroll("A", [tpl(v) for v in unit(rng, 3)], metadata={"k": 1})
    assert g.subject("A").metadata == {"k": 1} and len(g.subject("A").template_ids) == 3
    assert g.enroll("A", unit(rng, 1)) == 4 and g.subject("A").metadata == {"k": 1}
    assert g.enroll("A", unit(rng, 1), replace=True) == 1 and g.template_count == 1
    with pytest.raises(InputError):
        g.identify(tpl(unit(rng, 1)[0]), k=0, threshold=0.5)
    with pytest.raises(InputError):
        g.identify(tpl(unit(rng, 1)[0]), fpir=None)
    with pytest.raises(InputError):
        g.enroll_many(["A", "B"], unit(rng, 3))


def test_fpir_threshold_grows_with_gallery_size(engine):
    g = Gallery(engine)
    ts = [g.threshold_for(0.003, n) for n in (1, 10, 100, 500, 3000)]
    assert ts == sorted(ts) and ts[0] < ts[-1] and ts[0] == ts[1]  # below the grid: size 10's
    assert g.threshold_for(0.1, 500) < g.threshold_for(0.01, 500) < g.threshold_for(0.001, 500)
    # Stricter than the 1:1 threshold at the same rate: one search makes N comparisons.
    assert g.threshold_for(0.01, 500) > engine.operating_points[1e-2]
    with pytest.raises(CalibrationError, match="below what the calibration resolves"):
        g.threshold_for(0.003, 10**5)  # past what 24 M lfw-dev impostor scores resolve
    assert g.threshold_for(0.1, 10**5) > g.threshold_for(0.1, 3000)  # extrapolated on the tail
    with pytest.raises(CalibrationError, match="calibrated: 0.1, 0.03, 0.01, 0.003, 0.001"):
        g.threshold_for(0.005, 100)
    empty = g.identify(matcher.Template(np.eye(128, dtype=np.float32)[0], engine.model,
                                        engine.model_hash))
    assert empty.candidates == [] and empty.decision is None
    with pytest.raises(CalibrationError):
        Gallery("sface-2021dec", "0000000000000000").threshold_for(0.01, 10)


def test_images_and_store(engine, astronaut_bgr, tmp_path):
    import cv2

    key = os.urandom(32)
    st = GalleryStore(tmp_path / "store", key=key, require_encryption=True, engine=engine)
    a = st.create("CX880", engine, expires_at=T0)
    b = st.create("CX881", engine)
    rng = np.random.default_rng(4)
    a.enroll("ASTRONAUT", astronaut_bgr, metadata={"seat": "1A"})
    b.enroll_many([f"X{i}" for i in range(50)], unit(rng, 50, 128))
    st.save("CX880")
    st.save("CX881")
    with pytest.raises(InputError):
        st.create("CX880", engine)
    with pytest.raises(InputError):
        st.get("../etc")
    live = cv2.resize(astronaut_bgr, (400, 400))
    r = st.identify(live, ["CX880", "CX881"], k=3, fpir=0.003)
    assert r.decision == "CX880/ASTRONAUT" and r.gallery_templates == 51
    assert r.candidates[0].score > r.threshold and len(r.candidates) == 3
    assert a.identify(live).decision == "ASTRONAUT"
    st2 = GalleryStore(tmp_path / "store", key=key, require_encryption=True, engine=engine)
    assert st2.names() == ["CX880", "CX881"]
    assert st2.identify(live, ["CX881"], k=3).decision is None
    rep = st2.purge_expired(T0)
    assert rep["galleries"] == ["CX880"] and st2.names() == ["CX881"]
    with pytest.raises(InputError):
        GalleryStore(tmp_path / "x", require_encryption=True)


def test_cli_gallery_round_trip(astronaut_bgr, tmp_path):
    import json

    import cv2
    from click.testing import CliRunner

    from matcher.cli import main

    people = tmp_path / "people"
    (people / "ASTRONAUT").mkdir(parents=True)
    cv2.imwrite(str(people / "ASTRONAUT" / "a.png"), astronaut_bgr)
    (people / "BROKEN").mkdir()
    (people / "BROKEN" / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    probe = tmp_path / "probe.jpg"
    cv2.imwrite(str(probe), cv2.resize(astronaut_bgr, (300, 300)))
    store = ["--store", str(tmp_path / "store")]
    run = CliRunner().invoke
    assert run(main, ["gallery", "create", "CX880", *store, "--threads", "1"]).exit_code == 0
    r = run(main, ["gallery", "enroll", "CX880", "--folder", str(people), *store, "--threads", "1"])
    assert r.exit_code == 2 and "failed:" in r.output and "BROKEN" in r.output  # reported, not fatal
    assert json.loads(r.output.strip().splitlines()[-1])["subjects"] == 1
    r = run(main, ["identify", str(probe), "-g", "CX880", *store, "--json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["decision"] == "CX880/ASTRONAUT"
    r = run(main, ["gallery", "remove", "CX880", "ASTRONAUT", "NOBODY", *store])
    assert json.loads(r.output) == {"removed": ["ASTRONAUT"], "not_found": ["NOBODY"]}
    r = run(main, ["identify", str(probe), "-g", "CX880", *store, "--threads", "1"])
    assert r.exit_code == 1 and "nobody" in r.output
    r = run(main, ["gallery", "info", *store])
    assert json.loads(r.output)["subjects"] == 0
    r = run(main, ["identify", str(probe), "-g", "NOPE", *store, "--threads", "1"])
    assert r.exit_code == 2


def test_unbound_gallery_binds_to_one_model_hash():
    rng = np.random.default_rng(8)
    g = Gallery(MODEL)  # no hash: the first enrolment binds it
    with pytest.raises(ModelMismatchError):
        g.enroll("A", [tpl(unit(rng, 1)[0]), tpl(unit(rng, 1)[0], h="fedcba9876543210")])
    g.enroll("A", tpl(unit(rng, 1)[0]))
    assert g.model_hash == HASH
    with pytest.raises(ModelMismatchError):
        g.enroll("B", tpl(unit(rng, 1)[0], h="fedcba9876543210"))


# ----------------------------------------------------------------- review findings
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_ties_rank_by_subject_id_whatever_the_enrolment_order(kind):
    rng = np.random.default_rng(9)
    v = unit(rng, 40)
    dup_ids = [f"D{c}" for c in "QZAMBYC"]  # one face enrolled under 7 ids
    answers = []
    for order in (dup_ids, dup_ids[::-1]):
        g = Gallery(MODEL, HASH, kind=kind)
        g.enroll_many(order, np.repeat(v[:1], len(order), axis=0))
        g.enroll_many([f"P{i}" for i in range(39)], v[1:])
        g.enroll("DQ", v[5:6])  # a second template: the subject's max decides, ties still hold
        r = g.identify(v[0], k=3, threshold=0.5)
        answers.append([(c.subject_id, c.score, c.rank) for c in r.candidates])
        assert r.decision == "DA"
    assert answers[0] == answers[1]
    assert [a[0] for a in answers[0]] == ["DA", "DB", "DC"]


def test_an_empty_gallery_reports_no_fpir_under_an_explicit_threshold():
    g = Gallery(MODEL, HASH)
    r = g.identify(unit(np.random.default_rng(1), 1)[0], threshold=0.3)
    assert r.fpir is None and r.candidates == [] and r.decision is None


def test_bad_vector_inputs_are_typed_errors():
    rng = np.random.default_rng(2)
    g = Gallery(MODEL, HASH)
    g.enroll("A", tpl(unit(rng, 1)[0]))
    with pytest.raises(matcher.errors.TemplateError):
        g.enroll_many(["B", "C"], [tpl(unit(rng, 1)[0]), tpl(unit(rng, 1, d=32)[0])])
    with pytest.raises(matcher.errors.TemplateError):
        g.identify_many([tpl(unit(rng, 1, d=32)[0])], threshold=0.3)
    for bad in (np.array([["a"] * 64]), unit(rng, 1).astype(np.complex64)):
        with pytest.raises(InputError, match="floating point"):
            g.enroll("D", bad)
    assert g.subject_ids() == ["A"]


def test_forged_plaintext_metadata_is_refused():
    """Plaintext gallery files carry an unkeyed checksum: anyone can re-pack them, so every part
    of the metadata is checked against what enrolment could have produced."""
    import copy

    from matcher import gallery_file

    rng = np.random.default_rng(4)
    base = unit(rng, 1)
    near = base + 0.05 * rng.normal(size=(3, 64)).astype(np.float32)
    g = Gallery(MODEL, HASH, kind="flat")
    g.enroll("A", near / np.linalg.norm(near, axis=1, keepdims=True))  # A's 3 templates first
    g.enroll("B", unit(rng, 1))
    meta, index = gallery_file.unpack(g.to_bytes(), None)
    assert Gallery.from_bytes(gallery_file.pack(meta, index, None)).template_count == 4

    def forge(edit):
        m = copy.deepcopy(meta)
        edit(m)
        return gallery_file.pack(m, index, None)

    subjects = lambda m: {s["id"]: s for s in m["subjects"]}
    forgeries = {
        "claimed twice": lambda m: subjects(m)["B"].__setitem__(
            "template_ids", subjects(m)["A"]["template_ids"][:1]),
        "bad id": lambda m: subjects(m)["B"].__setitem__("id", " padded "),
        "naive time": lambda m: subjects(m)["B"].__setitem__("expires_at", "2026-12-05T12:00:00"),
        "no templates": lambda m: subjects(m)["B"].__setitem__("template_ids", []),
        "twice": lambda m: m["subjects"].append(copy.deepcopy(subjects(m)["B"])),
        "next id": lambda m: m.__setitem__("next_template_id", 2),
        "dim": lambda m: m.__setitem__("dim", 32),
    }
    for name, edit in forgeries.items():
        with pytest.raises(GalleryFileError):
            Gallery.from_bytes(forge(edit))
            pytest.fail(f"forgery {name!r} loaded")
    # a forged max_per_subject cannot make a search drop a subject: it is derived, not read
    loaded = Gallery.from_bytes(forge(lambda m: m.__setitem__("max_per_subject", 1)))
    r = loaded.identify_many(base, k=2, threshold=-1.0)
    assert {c.subject_id for c in r[0].candidates} == {"A", "B"}
