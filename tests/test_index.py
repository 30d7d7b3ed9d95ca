"""Tests of matcher.index.VectorIndex against brute-force numpy."""

from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import pytest

from matcher.errors import InputError
from matcher.index import VectorIndex

DIM = 64
N_BIG = 20_000
N_PLANTED = 1000
APPROX_KINDS = ["hnsw", "ivf", "IVF256,SQ8", "HNSW16"]


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(rng, n, d=DIM) -> np.ndarray:
    return unit(rng.standard_normal((n, d)))


def brute(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int):
    """Exact top-k (float64 scores), padded like VectorIndex.search."""
    s = q.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    out_s = np.full((len(q), k), -np.inf)
    out_i = np.full((len(q), k), -1, np.int64)
    kk = order.shape[1]
    out_s[:, :kk] = np.take_along_axis(s, order, axis=1)
    out_i[:, :kk] = ids[order]
    return out_s, out_i


def assert_exact_scores(index_vectors: dict[int, np.ndarray], q, scores, ids):
    """Every returned score is the exact dot product of the query and the returned id's vector."""
    for qi in range(len(q)):
        for s, i in zip(scores[qi], ids[qi]):
            if i == -1:
                assert s == -np.inf
                continue
            exact = float(index_vectors[int(i)].astype(np.float64) @ q[qi].astype(np.float64))
            assert abs(float(s) - exact) <= 1e-5
        valid = ids[qi][ids[qi] != -1]
        assert np.unique(valid).size == valid.size
        assert np.all(np.diff(scores[qi][ids[qi] != -1]) <= 0)


def assert_matches_brute(vectors, ids, q, scores, got, k):
    """Same ids as brute force (up to swaps of near-ties), scores to 1e-5 and exact."""
    ref_s, ref_i = brute(vectors, ids, q, k)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert_exact_scores(dict(zip(ids.tolist(), vectors)), q, scores, got)
    # Where the exact ranking has a clear gap on both sides, the id must be the same.
    pad = np.full((len(q), 1), np.inf)
    gaps = np.abs(np.diff(np.hstack([pad, np.where(np.isinf(ref_s), -1e9, ref_s), -pad]), axis=1))
    clear = (gaps[:, :-1] > 2e-6) & (gaps[:, 1:] > 2e-6)
    np.testing.assert_array_equal(got[clear], ref_i[clear])
    padded = ref_i == -1
    np.testing.assert_array_equal(got[padded], -1)
    assert clear[~padded].mean() > 0.9


@pytest.fixture(scope="module")
def planted():
    """20k random unit vectors and 1000 queries, each a noisy copy (cos ~0.95) of one of them."""
    rng = np.random.default_rng(2024)
    x = random_unit(rng, N_BIG)
    ids = rng.permutation(10 * N_BIG)[:N_BIG].astype(np.int64) * 7 - 30_000
    mates = rng.choice(N_BIG, N_PLANTED, replace=False)
    q = unit(x[mates] + 0.04 * rng.standard_normal((N_PLANTED, DIM)))
    return x, ids, q, ids[mates]


@pytest.fixture(scope="module")
def built(planted):
    """One index per approximate kind over the planted set, built once (tests copy via bytes)."""
    x, ids, _, _ = planted
    out = {}
    for kind in APPROX_KINDS:
        idx = VectorIndex(DIM, kind)
        idx.add(ids, x)
        out[kind] = idx.to_bytes()
    return out


# ------------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("n", [1, 7, 500, 3000])
def test_flat_equals_brute_force(n):
    rng = np.random.default_rng(n)
    x = random_unit(rng, n)
    ids = rng.choice(10**12, n, replace=False).astype(np.int64)
    q = random_unit(rng, 40)
    idx = VectorIndex(DIM, "flat")
    idx.add(ids, x)
    for k in (1, 5, 32, n + 3):
        scores, got = idx.search(q, k)
        assert scores.dtype == np.float32 and got.dtype == np.int64
        assert scores.shape == got.shape == (40, k)
        assert_matches_brute(x, ids, q, scores, got, k)


@pytest.mark.parametrize("kind", APPROX_KINDS)
def test_approximate_kinds_find_planted_mates_with_exact_scores(planted, built, kind):
    x, ids, q, mate_ids = planted
    idx = VectorIndex.from_bytes(built[kind])
    assert idx.kind_in_use == kind and len(idx) == N_BIG
    scores, got = idx.search(q, 10)
    hits = (got[:, 0] == mate_ids).mean()
    assert hits >= 0.999, (kind, hits)
    vec = dict(zip(ids.tolist(), x))
    assert_exact_scores(vec, q[:200], scores[:200], got[:200])
    # Rank 1 is the brute-force rank 1 with the same score.
    ref_s, ref_i = brute(x, ids, q[:200], 1)
    ok = got[:200, 0] == ref_i[:, 0]
    assert ok.mean() >= 0.99
    np.testing.assert_allclose(scores[:200, 0][ok], ref_s[ok, 0], atol=1e-5)
    # Single-query calls agree with the batch.
    for qi in (0, 17):
        s1, i1 = idx.search(q[qi: qi + 1], 10)
        np.testing.assert_array_equal(i1[0], got[qi])
        np.testing.assert_array_equal(s1[0], scores[qi])


def test_ivf_is_deterministic(planted, built):
    x, ids, _, _ = planted
    idx = VectorIndex(DIM, "ivf")
    idx.add(ids, x)
    assert idx.to_bytes() == built["ivf"]


# ------------------------------------------------------------------------------------------------
# Removal


@pytest.mark.parametrize("kind", ["flat", *APPROX_KINDS])
def test_removed_ids_are_never_returned(planted, built, kind):
    x, ids, q, mate_ids = planted
    if kind == "flat":
        idx = VectorIndex(DIM, "flat")
        idx.add(ids, x)
    else:
        idx = VectorIndex.from_bytes(built[kind])
    rng = np.random.default_rng(5)
    # 10 %: below the HNSW rebuild point, so HNSW searches run with tombstones.
    gone = set(rng.choice(ids, N_BIG // 10, replace=False).tolist())
    gone |= set(mate_ids[:50].tolist())
    assert idx.remove(np.array(sorted(gone))) == len(gone)
    assert idx.remove(np.array(sorted(gone))) == 0  # unknown ids are ignored
    assert len(idx) == N_BIG - len(gone)
    if kind in ("hnsw", "HNSW16"):
        assert idx.tombstones == len(gone)
    gone_arr = np.array(sorted(gone))
    changed = np.empty(0, np.int64)  # re-added with new vectors

    def check(index):
        scores, got = index.search(q, 20)
        assert not np.isin(got, gone_arr).any()
        keep = ~np.isin(mate_ids, gone_arr) & ~np.isin(mate_ids, changed)
        assert (got[keep, 0] == mate_ids[keep]).mean() >= 0.999
        assert not any(index.contains(int(i)) for i in gone_arr[:100])
        return scores, got

    s1, i1 = check(idx)
    # Still true after a serialisation round trip (tombstones included), with identical results.
    copy = VectorIndex.from_bytes(idx.to_bytes())
    s2, i2 = check(copy)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    # Past 20 % tombstones the HNSW is rebuilt from the dense matrix.
    more = rng.choice(np.setdiff1d(ids, gone_arr), N_BIG // 8, replace=False)
    idx.remove(more)
    gone_arr = np.union1d(gone_arr, more)
    assert idx.tombstones == 0 or kind not in ("hnsw", "HNSW16")
    check(idx)
    # Re-adding removed ids works (with new vectors, found as their own best match).
    back = gone_arr[:300]
    newv = random_unit(np.random.default_rng(9), back.size)
    idx.add(back, newv)
    gone_arr, changed = gone_arr[300:], back
    check(idx)
    _, got = idx.search(newv, 1)
    assert (got[:, 0] == back).mean() >= 0.99
    np.testing.assert_array_equal(idx.vectors_of(back), newv)
    with pytest.raises(InputError, match="already"):
        idx.add(back[:1], newv[:1])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "HNSW16,Flat"])
def test_random_operations_match_a_model(kind):
    """Adds and removals in random order (capacity growth, swap-removal) vs a dict model."""
    rng = np.random.default_rng(77)
    d = 16
    idx = VectorIndex(d, kind)
    model: dict[int, np.ndarray] = {}
    next_id = 0
    for step in range(60):
        if model and rng.random() < 0.4:
            keys = np.array(list(model))
            drop = rng.choice(keys, rng.integers(1, max(2, len(keys) // 3)), replace=False)
            extra = np.array([10**9 + step])  # unknown: ignored
            assert idx.remove(np.concatenate([drop, extra])) == drop.size
            for i in drop.tolist():
                del model[i]
        else:
            m = int(rng.integers(1, 40))
            new_ids = np.arange(next_id, next_id + m, dtype=np.int64)
            next_id += m
            v = random_unit(rng, m, d)
            idx.add(new_ids, v)
            model.update(zip(new_ids.tolist(), v))
        assert len(idx) == len(model)
        if not model:
            continue
        keys = np.array(list(model), np.int64)
        vecs = np.stack([model[i] for i in keys.tolist()])
        q = random_unit(rng, 3, d)
        scores, got = idx.search(q, 5)
        assert_exact_scores(model, q, scores, got)
        if kind == "flat":
            assert_matches_brute(vecs, keys, q, scores, got, 5)
        np.testing.assert_array_equal(idx.vectors_of(keys[:5]), vecs[:5])
        # Each stored vector finds itself (graph kinds: nearly always).
        _, self_hit = idx.search(vecs[:20], 1)
        assert (self_hit[:, 0] == keys[:20]).mean() >= 0.9


# ------------------------------------------------------------------------------------------------
# Training fallback and auto


def test_ivf_searches_flat_until_it_can_train(planted):
    x, ids, q, mate_ids = planted
    idx = VectorIndex(DIM, "ivf")
    idx.add(ids[:1000], x[:1000])
    assert idx.kind_in_use == "flat"
    s, got = idx.search(q[:20], 5)
    assert_matches_brute(x[:1000], ids[:1000], q[:20], s, got, 5)
    idx.add(ids[1000:3000], x[1000:3000])  # 3000 >= 64 lists * 39
    assert idx.kind_in_use == "ivf"
    fac = VectorIndex(DIM, "IVF128,SQ8")
    fac.add(ids[:3000], x[:3000])
    assert fac.kind_in_use == "flat"  # 128 * 39 = 4992 needed
    fac.add(ids[3000:6000], x[3000:6000])
    assert fac.kind_in_use == "IVF128,SQ8"
    mates = np.isin(mate_ids, ids[:6000])
    _, got = fac.search(q[mates], 1)
    assert (got[:, 0] == mate_ids[mates]).mean() >= 0.99


def test_auto_switches_flat_to_ivf_and_back(planted):
    x, ids, q, mate_ids = planted
    idx = VectorIndex(DIM, threads=1, auto_threshold=2000)
    assert idx.kind == "auto"
    idx.add(ids[:1500], x[:1500])
    assert idx.kind_in_use == "flat"
    idx.add(ids[1500:4000], x[1500:4000])
    assert idx.kind_in_use == "ivf"
    vec = dict(zip(ids[:4000].tolist(), x[:4000]))
    mates = np.isin(mate_ids, ids[:4000])
    s, got = idx.search(q[mates], 5)
    assert (got[:, 0] == mate_ids[mates]).all()
    assert_exact_scores(vec, q[mates], s, got)
    # Rank-1 scores are the flat path's scores bit for bit (same native kernel).
    flat = VectorIndex(DIM, "flat")
    flat.add(ids[:4000], x[:4000])
    fs, fi = flat.search(q[mates], 1)
    np.testing.assert_array_equal(fi[:, 0], got[:, 0])
    np.testing.assert_array_equal(fs[:, 0], s[:, 0])
    # Shrinking below threshold / 2 goes back to exact flat search.
    idx.remove(ids[:2500])
    assert idx.kind_in_use == "ivf"  # 1500 >= 1000
    idx.remove(ids[2500:3100])
    assert idx.kind_in_use == "flat" and len(idx) == 900
    s, got = idx.search(q[:30], 7)
    assert_matches_brute(x[3100:4000], ids[3100:4000], q[:30], s, got, 7)


# ------------------------------------------------------------------------------------------------
# Padding, accessors


@pytest.mark.parametrize("kind", ["flat", "hnsw", "auto"])
def test_padding_when_k_exceeds_size(kind):
    rng = np.random.default_rng(3)
    idx = VectorIndex(8, kind)
    q = random_unit(rng, 2, 8)
    s, i = idx.search(q, 4)
    assert (i == -1).all() and np.isneginf(s).all() and s.shape == (2, 4)
    x = random_unit(rng, 3, 8)
    idx.add(np.array([10, 20, 30]), x)
    s, i = idx.search(q, 5)
    assert_matches_brute(x, np.array([10, 20, 30]), q, s, i, 5)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    idx.remove(np.array([10, 20, 30]))
    s, i = idx.search(q, 2)
    assert (i == -1).all() and len(idx) == 0


def test_accessors():
    rng = np.random.default_rng(4)
    idx = VectorIndex(8, "flat")
    assert len(idx) == 0 and not idx.contains(5) and 5 not in idx
    x = random_unit(rng, 100, 8)
    ids = np.arange(100, dtype=np.int64) * 11
    base = idx.memory_bytes()
    idx.add(ids, x)
    assert idx.memory_bytes() > base + 100 * 8 * 4
    assert idx.contains(11) and idx.contains(np.int64(22)) and 12 not in idx
    np.testing.assert_array_equal(idx.vectors_of(np.array([22, 0, 11])), x[[2, 0, 1]])
    assert idx.vectors_of(np.array([], np.int64)).shape == (0, 8)
    assert idx.remove([0, 11, 12345]) == 2
    assert sorted(idx.ids().tolist()) == sorted(ids[2:].tolist())
    np.testing.assert_array_equal(idx.vectors_of(np.array([99 * 11])), x[99:])
    assert idx.remove(np.array([], np.int64)) == 0 and idx.remove([]) == 0
    assert idx.threads == 1
    idx.threads = 2
    assert idx.threads == 2
    assert "flat" in repr(idx)


def test_concurrent_searches_match_serial(planted, built):
    x, ids, q, _ = planted
    for idx in (VectorIndex.from_bytes(built["hnsw"]), VectorIndex(DIM, "flat")):
        if len(idx) == 0:
            idx.add(ids[:5000], x[:5000])
        idx.remove(ids[:100])  # HNSW: searches use the tombstone selector
        serial = [idx.search(q[i: i + 50], 5) for i in range(0, 400, 50)]
        with ThreadPoolExecutor(4) as pool:
            par = list(pool.map(lambda i, idx=idx: idx.search(q[i: i + 50], 5),
                                range(0, 400, 50)))
        for (s1, i1), (s2, i2) in zip(serial, par):
            np.testing.assert_array_equal(i1, i2)
            np.testing.assert_array_equal(s1, s2)


# ------------------------------------------------------------------------------------------------
# Bad inputs

GOOD = random_unit(np.random.default_rng(0), 3, 8)


def fresh():
    idx = VectorIndex(8, "flat")
    idx.add(np.array([1, 2, 3], np.int64), GOOD)
    return idx


@pytest.mark.parametrize(
    "args, kwargs",
    [((0,), {}), ((-3,), {}), ((8.0,), {}), ((True,), {}), ((8, "bogus"), {}),
     ((8, "IVF-3,SQ8"), {}), ((8, ""), {}), ((8, "IDMap,Flat"), {}), ((8, 5), {}),
     ((8,), {"threads": 0}), ((8,), {"threads": 1.5}), ((8,), {"auto_threshold": 0})],
)
def test_constructor_rejects(args, kwargs):
    with pytest.raises(InputError):
        VectorIndex(*args, **kwargs)


def _nan():
    v = GOOD[:1].copy()
    v[0, 3] = np.nan
    return v


@pytest.mark.parametrize(
    "ids, vectors, match",
    [
        (np.array([7]), GOOD[:1].astype(np.float64), "float32"),
        (np.array([7]), GOOD[:1, :7].copy(), "shape"),
        (np.array([7]), GOOD[0], "shape"),
        (np.array([7]), _nan(), "NaN"),
        (np.array([7]), GOOD[:1] * 1.01, "unit norm"),
        (np.array([7]), np.zeros((1, 8), np.float32), "unit norm"),
        (np.array([7, 7]), GOOD[:2], "more than once"),
        (np.array([8, 2]), GOOD[:2], "already"),
        (np.array([-1]), GOOD[:1], "reserved"),
        (np.array([7, 8]), GOOD[:1], "entries"),
        ([7], GOOD[:1], "numpy"),
        (np.array([7.0]), GOOD[:1], "integer"),
        (np.array([[7]]), GOOD[:1], "1-D"),
        (np.array([2**64 - 1], np.uint64), GOOD[:1], "int64"),
        (np.array([7]), [[0.0] * 8], "numpy"),
    ],
)
def test_add_rejects_and_changes_nothing(ids, vectors, match):
    idx = fresh()
    before = idx.to_bytes()
    with pytest.raises(InputError, match=match):
        idx.add(ids, vectors)
    assert idx.to_bytes() == before and len(idx) == 3


@pytest.mark.parametrize(
    "q, k",
    [(GOOD.astype(np.float64), 1), (GOOD[:, :7].copy(), 1), (GOOD[0], 1), (GOOD, 0), (GOOD, -1),
     (GOOD, 1.5), (GOOD, True), (_nan(), 1), (GOOD.tolist(), 1), (np.full((1, 8), np.inf,
                                                                           np.float32), 1)],
)
def test_search_rejects(q, k):
    for idx in (fresh(), VectorIndex(8, "flat")):
        with pytest.raises(InputError):
            idx.search(q, k)


def test_other_rejects():
    idx = fresh()
    with pytest.raises(InputError):
        idx.vectors_of(np.array([1, 99]))
    with pytest.raises(InputError):
        idx.contains("1")
    with pytest.raises(InputError):
        idx.remove(np.array([1.5]))
    with pytest.raises(InputError):
        idx.remove(5)
    with pytest.raises(InputError):
        idx.threads = 0
    # Strided queries are accepted (copied).
    _, i = idx.search(np.repeat(GOOD, 2, axis=1)[:, ::2], 1)
    np.testing.assert_array_equal(i[:, 0], [1, 2, 3])


# ------------------------------------------------------------------------------------------------
# Serialisation


@pytest.mark.parametrize("kind", ["flat", "auto", *APPROX_KINDS])
def test_round_trip_gives_identical_results(planted, built, kind):
    x, ids, q, _ = planted
    if kind in built:
        idx = VectorIndex.from_bytes(built[kind])
    else:
        idx = VectorIndex(DIM, kind)
        idx.add(ids[:3000], x[:3000])
    idx.remove(ids[:10])
    copy = VectorIndex.from_bytes(bytearray(idx.to_bytes()), threads=2)
    assert copy.threads == 2
    assert (len(copy), copy.kind, copy.kind_in_use, copy.dim) == (
        len(idx), idx.kind, idx.kind_in_use, idx.dim)
    s1, i1 = idx.search(q[:100], 10)
    s2, i2 = copy.search(q[:100], 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert copy.contains(int(ids[20])) and not copy.contains(int(ids[0]))
    np.testing.assert_array_equal(copy.vectors_of(ids[20:25]), idx.vectors_of(ids[20:25]))
    assert copy.to_bytes() == idx.to_bytes()
    # The copy keeps working: add and remove.
    copy.add(ids[:10], x[:10])
    copy.remove(ids[10:20])
    _, got = copy.search(x[:10], 1)
    assert (got[:, 0] == ids[:10]).mean() >= 0.9


def test_empty_round_trip():
    for kind in ("flat", "hnsw", "ivf", "HNSW8"):
        idx = VectorIndex(5, kind)
        copy = VectorIndex.from_bytes(idx.to_bytes())
        assert len(copy) == 0 and copy.kind == kind


def _reseal(body: bytes) -> bytes:
    return body + hashlib.blake2b(body, digest_size=16).digest()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_truncated_or_corrupt_bytes_raise_input_error(planted, built, kind):
    x, ids, _, _ = planted
    if kind in built:
        data = built[kind]
    else:
        idx = VectorIndex(DIM, kind)
        idx.add(ids[:500], x[:500])
        data = idx.to_bytes()
    rng = np.random.default_rng(8)
    cuts = {0, 1, 3, 4, 10, 30, 60, len(data) // 2, len(data) - 17, len(data) - 16,
            len(data) - 1, *rng.integers(0, len(data), 20).tolist()}
    for cut in cuts:
        with pytest.raises(InputError):
            VectorIndex.from_bytes(data[:cut])
    for pos in [0, 5, 12, 40, len(data) // 3, len(data) - 20, len(data) - 1,
                *rng.integers(0, len(data), 20).tolist()]:
        bad = bytearray(data)
        bad[pos] ^= 0x41
        with pytest.raises(InputError):
            VectorIndex.from_bytes(bytes(bad))
    with pytest.raises(InputError):
        VectorIndex.from_bytes(data + b"\0")
    with pytest.raises(InputError):
        VectorIndex.from_bytes("not bytes")  # type: ignore[arg-type]
    # Structurally wrong but correctly digested: still InputError.
    body = bytearray(data[:-16])
    for mutate in (
        lambda b: b.__setitem__(slice(4, 6), struct.pack("<H", 9)),          # version
        lambda b: b.__setitem__(slice(8, 12), struct.pack("<I", 0)),         # dim
        lambda b: b.__setitem__(slice(20, 28), struct.pack("<Q", 2**40)),    # n
        lambda b: b.__setitem__(slice(20, 28), struct.pack("<Q", 3)),        # n (fewer)
        lambda b: b.__setitem__(slice(28, 30), struct.pack("<H", 60000)),    # kind length
        lambda b: b.__setitem__(slice(30, 30), b"\xff"),                     # bad utf-8 kind
        lambda b: b.extend(b"junk"),                                         # trailing bytes
    ):
        b = bytearray(body)
        mutate(b)
        with pytest.raises(InputError):
            VectorIndex.from_bytes(_reseal(bytes(b)))


def test_crafted_faiss_internals_are_rejected(planted, built):
    # The digest is recomputed (as an attacker with the format could), so only the structural
    # checks of the FAISS part stand between these and an out-of-bounds read in FAISS.
    idx = VectorIndex.from_bytes(built["hnsw"])
    g = idx._faiss.hnsw
    nb = faiss.rev_swig_ptr(g.neighbors.data(), g.neighbors.size())
    keep = int(nb[5])
    nb[5] = idx._faiss.ntotal + 1000  # (FAISS 1.15's own reader catches this one too)
    with pytest.raises(InputError, match="HNSW|FAISS"):
        VectorIndex.from_bytes(idx.to_bytes())
    nb[5] = keep
    VectorIndex.from_bytes(idx.to_bytes())  # intact again
    level = g.max_level
    g.max_level = level + 3  # search would start above the graph (FAISS does not check)
    with pytest.raises(InputError, match="HNSW entry point or level"):
        VectorIndex.from_bytes(idx.to_bytes())
    g.max_level = level

    idx = VectorIndex.from_bytes(built["ivf"])
    ivf = faiss.extract_index_ivf(idx._faiss)
    lst = next(i for i in range(ivf.nlist) if ivf.invlists.list_size(i))
    faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), 1)[0] = 123456789
    with pytest.raises(InputError, match="IVF ids"):
        VectorIndex.from_bytes(idx.to_bytes())

    # A FAISS index of another type under the right spec.
    idx = VectorIndex(8, "hnsw")
    idx.add(np.array([1, 2, 3]), GOOD)
    idx._faiss = faiss.IndexFlatIP(8)
    idx._faiss.add(GOOD)
    with pytest.raises(InputError, match="FAISS index is"):
        VectorIndex.from_bytes(idx.to_bytes())


# ----------------------------------------------------------------- review findings
def _forged(kind: str, dim: int = 8) -> bytes:
    """A valid empty serialised VectorIndex whose kind is ``kind`` (see the to_bytes layout)."""
    k = kind.encode()
    body = (b"MTVX" + struct.pack("<HHIQQ", 1, 0, dim, 1_000_000, 0)
            + struct.pack("<H", len(k)) + k + struct.pack("<H", 0))
    return body + hashlib.blake2b(body, digest_size=16).digest()


def test_a_forged_kind_cannot_make_faiss_allocate_gigabytes():
    assert VectorIndex.from_bytes(_forged("IVF64,Flat")).kind == "IVF64,Flat"  # the layout holds
    for kind in ("IVF20000000,Flat", "IMI2x20,Flat", "HNSW100000"):
        with pytest.raises(InputError, match="exceeds|IMI"):
            VectorIndex.from_bytes(_forged(kind))
        with pytest.raises(InputError, match="exceeds|IMI"):
            VectorIndex(8, kind)


def test_a_failed_build_leaves_no_rows_behind(monkeypatch):
    rng = np.random.default_rng(5)

    def boom(self, spec):
        raise MemoryError("simulated")

    idx2 = VectorIndex(DIM, "auto", auto_threshold=20)
    idx2.add(np.arange(20), random_unit(rng, 20))
    monkeypatch.setattr(VectorIndex, "_build", boom)
    with pytest.raises(MemoryError):
        idx2.add(np.arange(20, 3000), random_unit(rng, 2980))  # crosses the threshold: builds
    assert len(idx2) == 20 and 25 not in idx2
    monkeypatch.undo()
    idx2.add(np.arange(20, 30), random_unit(rng, 10))  # the same ids are free again
    assert len(idx2) == 30
