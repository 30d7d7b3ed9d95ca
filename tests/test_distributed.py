"""ShardedGallery on Ray: the same answers as one Gallery, dead shards, restart, routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'matcher[ray]'")

import matcher
from matcher.distributed import ShardedGallery, ShardError, shard_of
from matcher.errors import InputError, ModelMismatchError
from matcher.gallery import Gallery

# The calibrated SFace pipeline hash (models/ card), so fpir= decisions work on random vectors.
MODEL, HASH = "sface-2021dec", "04051a3a339f0527"
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
SHARDS = 3


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_cluster):  # conftest.py: a local 2-CPU cluster, driver outside the repository
    return ray_cluster


def unit(rng, n, d=128):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    """600 subjects with 1..4 templates (1,500 templates); mated and non-mated probes."""
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 5, size=600)
    owners = [f"P{i:04d}" for i, c in enumerate(counts) for _ in range(c)]
    vecs = unit(rng, len(owners))
    idx = rng.choice(len(vecs), 30, replace=False)
    probes = vecs[idx] + 0.04 * rng.normal(size=(30, 128)).astype(np.float32)
    probes = np.concatenate([probes, unit(rng, 10)])
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return vecs, owners, probes


def kill(actor) -> None:
    """Kill an actor and wait until Ray reports it dead. ``ray.kill`` only sends the request
    (through the GCS), while a method call goes straight to the actor, so a call made right
    after the kill can still be served (this raced once in CI)."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers after 60 s")


def assert_same(got, exp):
    assert len(got) == len(exp)
    for a, b in zip(got, exp):
        assert [c.subject_id for c in a.candidates] == [c.subject_id for c in b.candidates]
        assert [c.rank for c in a.candidates] == [c.rank for c in b.candidates]
        assert [c.score for c in a.candidates] == [c.score for c in b.candidates]  # exactly
        assert (a.decision, a.gallery_templates, a.fpir, a.model) == \
            (b.decision, b.gallery_templates, b.fpir, b.model)
        assert a.threshold == pytest.approx(b.threshold, abs=1e-12)


def check_equal(sg, g, probes):
    for kw in ({"threshold": 0.3}, {"fpir": 0.003}, {"fpir": 0.1}):
        exp = g.identify_many(probes, k=5, **kw)
        assert_same(sg.identify_many(probes, k=5, **kw), exp)
        tpl = matcher.Template(probes[0], MODEL, HASH)
        assert_same([sg.identify(tpl, k=5, **kw)], [g.identify(tpl, k=5, **kw)])
        assert_same([sg.identify(probes[1], k=5, **kw)], [g.identify(probes[1], k=5, **kw)])
    return exp


@pytest.fixture(scope="module")
def pair(data):
    vecs, owners, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=SHARDS, kind="flat")
    g = Gallery(MODEL, HASH, kind="flat")
    assert sg.enroll_many(owners, vecs) == len(owners)
    g.enroll_many(owners, vecs)
    return sg, g


def test_equal_to_single_gallery(pair, data):
    sg, g = pair
    _, owners, probes = data
    assert sg.template_count == g.template_count == len(owners)
    info = sg.info()
    assert info["subjects"] == len(g) and info["shards"] == SHARDS
    assert all(p["templates"] > 0 for p in info["per_shard"])  # hashing spreads the subjects
    res = check_equal(sg, g, probes)
    assert sum(r.decision is not None for r in res[:30]) >= 25  # mates are found and decided
    assert all(r.decision is None for r in res[30:])


def test_equal_after_enroll_remove_purge(pair, data):
    sg, g = pair
    _, owners, probes = data
    rng = np.random.default_rng(8)
    gone = sorted(set(owners))[::7]
    for sid in gone:
        assert sg.remove(sid) and g.remove(sid)
    assert not sg.remove(gone[0])
    extra = unit(rng, 3)
    for which in (sg, g):
        which.enroll("NEW-1", [matcher.Template(v, MODEL, HASH) for v in extra],
                     metadata={"flight": "CX880"}, expires_at=T0)
        which.enroll("NEW-2", extra[:1], expires_at=T0 + timedelta(days=2))
    check_equal(sg, g, np.concatenate([probes, extra]))
    assert sg.purge_expired(T0) == g.purge_expired(T0) == ["NEW-1"]
    assert sg.template_count == g.template_count
    check_equal(sg, g, np.concatenate([probes, extra]))


def test_save_load_kill_restart(pair, data, tmp_path):
    sg, g = pair
    _, _, probes = data
    sg.save(tmp_path / "sg")
    files = json.loads((tmp_path / "sg" / "manifest.json").read_text())["files"]
    assert sorted(os.listdir(tmp_path / "sg")) == ["manifest.json"] + files
    assert [f.split(".")[0] for f in files] == [f"shard-{i:04d}" for i in range(SHARDS)]
    loaded = ShardedGallery.load(tmp_path / "sg")
    assert loaded.shards == SHARDS and loaded.model_hash == HASH
    check_equal(loaded, g, probes)

    kill(loaded._actors[1])
    with pytest.raises(ShardError, match="shard 1 of 3") as err:
        loaded.identify_many(probes, k=5, threshold=0.3)
    assert err.value.shards == [1] and isinstance(err.value, matcher.errors.MatcherError)
    with pytest.raises(ShardError, match="shard 1"):
        _ = loaded.template_count
    loaded.restart_shard(1)
    check_equal(loaded, g, probes)

    # restart reloads the *last save*: a subject enrolled on that shard since then is gone
    sid = next(f"LATE-{i}" for i in range(100) if shard_of(f"LATE-{i}", SHARDS) == 2)
    loaded.enroll(sid, probes[:1])
    kill(loaded._actors[2])
    loaded.restart_shard(2)
    assert loaded.template_count == g.template_count
    check_equal(loaded, g, probes)


def test_restart_needs_a_save(data):
    vecs, owners, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=2)
    sg.enroll_many(owners[:10], vecs[:10])
    with pytest.raises(ShardError, match="save"):
        sg.restart_shard(0)
    with pytest.raises(InputError):
        sg.restart_shard(2)


def test_routing_is_stable_and_inputs_checked():
    ids = [f"TOKEN-{i}" for i in range(200)] + ["Zoë Ångström", "名前"]
    a, b = ShardedGallery(MODEL, HASH, shards=4), ShardedGallery(MODEL, HASH, shards=4)
    assert [a.shard_of(s) for s in ids] == [b.shard_of(s) for s in ids] == \
        [shard_of(s, 4) for s in ids]
    assert {shard_of(s, 4) for s in ids} == {0, 1, 2, 3}
    # pinned values: a change of hash function would silently mis-route saved galleries
    assert [shard_of(s, 8) for s in ("TOKEN-123", "A", "名前")] == PINNED
    # in another interpreter (different PYTHONHASHSEED), the same shards
    code = ("from matcher.distributed import shard_of;"
            "print([shard_of(s, 8) for s in ('TOKEN-123', 'A', '名前')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == str(PINNED)
    rng = np.random.default_rng(1)
    with pytest.raises(InputError, match="not images"):
        a.enroll("X", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ModelMismatchError):
        a.enroll("X", matcher.Template(unit(rng, 1)[0], MODEL, "ffffffffffffffff"))
    with pytest.raises(InputError):
        a.enroll(" bad id", unit(rng, 1))
    with pytest.raises(InputError):
        a.identify_many(unit(rng, 1), k=0)
    with pytest.raises(matcher.errors.TemplateError):  # raised in the shard, re-raised as itself
        a.enroll("X", np.ones((1, 128), np.float32))
    empty = a.identify(matcher.Template(unit(rng, 1)[0], MODEL, HASH), fpir=0.003)
    assert empty.candidates == [] and empty.decision is None and empty.gallery_templates == 0


PINNED = [2, 6, 7]  # blake2b-64 of the UTF-8 id, mod 8


def test_ray_is_optional():
    code = ("import sys, matcher; assert 'ray' not in sys.modules, 'import matcher imported ray';"
            "sys.modules['ray'] = None\n"
            "try:\n import matcher.distributed\nexcept ImportError as e:\n print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'matcher[ray]'" in out.stdout


def test_lfw_dev_equal(lfw_dir, engine):
    from matcher.datasets import labelled_images
    from matcher.evaluation import templates_of

    people = labelled_images(lfw_dir / "images")
    paths = [p for ps in list(people.values())[:300] for p in ps][:100]
    t0 = time.perf_counter()
    tpls, _ = templates_of(engine, paths)
    assert len(tpls) >= 90, f"templates of {len(tpls)}/{len(paths)} images"
    items = list(tpls.items())
    owners = [p.parent.name for p, _ in items]
    templates = [t for _, t in items]
    sg = ShardedGallery(engine, shards=SHARDS, kind="flat")
    g = Gallery(engine, kind="flat")
    sg.enroll_many(owners, templates)
    g.enroll_many(owners, templates)
    exp = g.identify_many(templates, k=5, fpir=0.003)
    assert_same(sg.identify_many(templates, k=5, fpir=0.003), exp)
    assert all(r.decision == o for r, o in zip(exp, owners))  # each image finds itself
    print(f"lfw-dev: {len(templates)} templates in {time.perf_counter() - t0:.1f} s")


def test_a_hanging_shard_is_a_timeout_naming_it(data):
    vecs, owners, probes = data
    sg = ShardedGallery(MODEL, HASH, shards=2, kind="flat", search_timeout=1.0)
    sg.enroll_many(owners, vecs)
    sg._actors[1].__ray_call__.remote(lambda self: time.sleep(6))  # shard 1 stuck for 6 s
    t = time.monotonic()
    with pytest.raises(ShardError, match=r"shard 1 of 2 \(no answer within 1 s\)") as err:
        sg.identify_many(probes[:2], k=5, threshold=0.3)
    assert err.value.shards == [1] and time.monotonic() - t < 5.5  # before the shard woke
    sg.search_timeout = 60.0  # once it answers again (after its sleep), searches work
    assert len(sg.identify_many(probes[:2], k=5, threshold=0.3)) == 2
    with pytest.raises(InputError, match="search_timeout"):
        ShardedGallery(MODEL, HASH, shards=1, search_timeout=0)



# ----------------------------------------------------------------- review findings
def test_tied_scores_rank_the_same_as_one_gallery(data):
    """The same face enrolled under several ids: ties rank by subject id on both sides."""
    vecs, _, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=SHARDS, kind="flat")
    g = Gallery(MODEL, HASH, kind="flat")
    ids = ["Z-dup", "A-dup", "M-dup", "B-dup", "Y-dup", "C-dup", "X-dup"]
    twin = np.repeat(vecs[:1], len(ids), axis=0)
    for which in (sg, g):
        which.enroll_many(ids, twin)
        which.enroll_many([f"P{i}" for i in range(50)], vecs[1:51])
    got, exp = sg.identify_many(vecs[:1], k=3, threshold=0.3), g.identify_many(vecs[:1], k=3,
                                                                                 threshold=0.3)
    assert_same(got, exp)
    assert [c.subject_id for c in exp[0].candidates] == ["A-dup", "B-dup", "C-dup"]


def test_a_shard_that_cannot_load_says_why(data, tmp_path):
    vecs, owners, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=2, kind="flat")
    sg.enroll_many(owners[:20], vecs[:20])
    sg.save(tmp_path / "enc", key=b"k" * 32)
    with pytest.raises(matcher.errors.MatcherError, match=r"shard \d: .*(key|encrypt)"):
        ShardedGallery.load(tmp_path / "enc", key=b"x" * 32)
    with pytest.raises(matcher.errors.MatcherError, match=r"shard \d: .*(key|encrypt)"):
        ShardedGallery.load(tmp_path / "enc")
    assert ShardedGallery.load(tmp_path / "enc", key=b"k" * 32).template_count == 20


def test_a_failed_save_keeps_the_last_good_one(data, tmp_path):
    vecs, owners, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=SHARDS, kind="flat")
    sg.enroll_many(owners[:300], vecs[:300])
    sg.save(tmp_path / "sg")
    before = sorted(os.listdir(tmp_path / "sg"))
    sg.enroll_many(owners[300:], vecs[300:])
    kill(sg._actors[1])
    with pytest.raises(ShardError, match="shard 1"):
        sg.save(tmp_path / "sg")
    assert sorted(os.listdir(tmp_path / "sg")) == before  # the partial save was cleaned up
    loaded = ShardedGallery.load(tmp_path / "sg")
    assert loaded.template_count == 300


def test_options_that_would_restart_shards_empty_are_refused():
    for opt in ("max_restarts", "max_task_retries"):
        with pytest.raises(InputError, match=opt):
            ShardedGallery(MODEL, HASH, shards=1, actor_options={opt: 1})


def test_bad_metadata_is_refused_in_the_driver(data):
    import threading

    vecs, _, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=1, kind="flat")
    with pytest.raises(InputError, match="JSON"):
        sg.enroll("M1", vecs[:1], metadata={"lock": threading.Lock()})
    assert sg.template_count == 0


def test_purge_order_and_close(data):
    vecs, _, _ = data
    sg = ShardedGallery(MODEL, HASH, shards=SHARDS, kind="flat")
    g = Gallery(MODEL, HASH, kind="flat")
    ids = [f"E{i}" for i in range(12)]
    for which in (sg, g):
        for i, sid in enumerate(ids[::-1]):
            which.enroll(sid, vecs[i:i + 1], expires_at=T0)
    assert sg.purge_expired(T0) == g.purge_expired(T0) == sorted(ids)
    with sg:
        assert sg.template_count == 0
    with pytest.raises(InputError, match="closed"):
        _ = sg.template_count


def test_a_bad_address_is_a_typed_error(tmp_path):
    code = ("from matcher.distributed import ClusterError, connect\n"
            "try:\n    connect('bogus-address')\nexcept ClusterError as e:\n    print('typed', e)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == 0 and res.stdout.startswith("typed cannot join"), res.stderr[-2000:]


def test_large_batches_go_in_chunks_with_the_same_answers(data, monkeypatch):
    from matcher import distributed

    vecs, owners, probes = data
    sg = ShardedGallery(MODEL, HASH, shards=SHARDS, kind="flat")
    g = Gallery(MODEL, HASH, kind="flat")
    sg.enroll_many(owners, vecs)
    g.enroll_many(owners, vecs)
    calls = []
    real = ShardedGallery._all
    monkeypatch.setattr(distributed, "SEARCH_CHUNK", 7)
    monkeypatch.setattr(ShardedGallery, "_all",
                        lambda self, m, *a, **kw: calls.append(m) or real(self, m, *a, **kw))
    assert_same(sg.identify_many(probes, k=5, fpir=0.003), g.identify_many(probes, k=5,
                                                                           fpir=0.003))
    assert calls.count("search") == -(-len(probes) // 7)


def test_racing_first_enrolments_of_two_pipelines_bind_one(data):
    import threading

    vecs, _, _ = data
    sg = ShardedGallery(MODEL, shards=2, kind="flat")  # unbound
    results = {}
    barrier = threading.Barrier(2)

    def enrol(h):
        barrier.wait()
        try:
            sg.enroll(f"S-{h}", [matcher.Template(vecs[0], MODEL, h)])
            results[h] = "ok"
        except ModelMismatchError:
            results[h] = "refused"

    threads = [threading.Thread(target=enrol, args=(h,)) for h in (HASH, "f" * 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results.values()) == ["ok", "refused"]
    winner = next(h for h, r in results.items() if r == "ok")
    assert sg.model_hash == winner and sg.template_count == 1
    assert {i["model_hash"] for i in [sg._gather([(0, sg._actors[0].info.remote())])[0],
                                      sg._gather([(1, sg._actors[1].info.remote())])[0]]} \
        == {winner}
