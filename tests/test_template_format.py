"""Portable template format: layout, round trips, score accuracy, and every corrupt input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher.errors import (
    InputError,
    MatcherError,
    ModelMismatchError,
    TemplateError,
    TemplateFormatError,
)
from matcher.template_format import ENCODINGS, MAX_DIM, encoded_size
from matcher.types import Template

MODEL = "sface-2021dec"
HASH = "0123456789abcdef"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def make(dim: int = 128, seed: int = 0, model: str = MODEL, model_hash: str = HASH) -> Template:
    return Template(unit(np.random.default_rng(seed).standard_normal(dim)), model, model_hash)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def build(*, magic=b"MT", version=1, code=0, dim=None, model=MODEL.encode(), id_len=None,
          mhash=bytes.fromhex(HASH), payload=None) -> bytes:
    """A blob assembled by hand from the documented layout, with a correct CRC."""
    if payload is None:
        payload = np.asarray(make(4).vector, "<f4").tobytes()
    if dim is None:
        dim = len(payload) // {0: 4, 1: 2, 2: 1}.get(code, 4)
    header = struct.pack("<2sBBHB", magic, version, code, dim,
                         len(model) if id_len is None else id_len)
    return with_crc(header + model + mhash + payload)


vectors = st.integers(1, 512).flatmap(
    lambda d: hnp.arrays(np.float64, d, elements=st.floats(-1, 1, allow_subnormal=False)))


# --- layout and sizes -------------------------------------------------------------------------

def test_int8_sface_template_is_160_bytes():
    sizes = {enc: len(make().to_bytes(enc)) for enc in ENCODINGS}
    print(f"\n128-d {MODEL} template bytes: {sizes}")
    assert sizes["int8"] == 2 + 1 + 1 + 2 + 1 + 13 + 8 + 128 + 4 == 160
    assert sizes["f16"] == 160 + 128 == 288 and sizes["f32"] == 160 + 3 * 128 == 544
    assert all(encoded_size(128, MODEL, enc) == n for enc, n in sizes.items())


@pytest.mark.parametrize("encoding,code,dtype", [("f32", 0, "<f4"), ("f16", 1, "<f2"),
                                                 ("int8", 2, "i1")])
def test_bytes_follow_the_documented_layout(encoding, code, dtype):
    t = make(100, seed=3)
    b = t.to_bytes(encoding)
    assert b[:2] == b"MT" and b[2] == 1 and b[3] == code
    assert struct.unpack_from("<H", b, 4)[0] == 100 and b[6] == len(MODEL)
    assert b[7:7 + len(MODEL)] == MODEL.encode()
    pos = 7 + len(MODEL)
    assert b[pos:pos + 8] == bytes.fromhex(HASH)
    payload = np.frombuffer(b, dtype, 100, pos + 8)
    assert len(b) == pos + 8 + payload.nbytes + 4
    assert struct.unpack("<I", b[-4:])[0] == zlib.crc32(b[:-4])
    if encoding == "f32":
        assert np.array_equal(payload, t.vector)
    elif encoding == "f16":
        assert np.array_equal(payload, t.vector.astype(np.float16))
    else:
        assert np.abs(payload).max() == 127
        expected = np.rint(t.vector.astype(np.float64) / np.abs(t.vector).max() * 127)
        assert np.array_equal(payload, expected.astype(np.int8))


# --- round trips ------------------------------------------------------------------------------

@given(vectors)
@settings(deadline=None)
def test_round_trip_every_encoding(v):
    norm = float(np.linalg.norm(v))
    assume(norm > 1e-6)
    t = Template(unit(v), MODEL, HASH)
    f32 = Template.from_bytes(t.to_bytes("f32"))
    assert f32 == t and (f32.model, f32.model_hash, f32.dim) == (MODEL, HASH, t.dim)  # lossless

    f16 = Template.from_bytes(t.to_bytes("f16"))
    assert f16.dim == t.dim and f16.vector.dtype == np.float32 and np.all(np.isfinite(f16.vector))
    assert np.abs(f16.vector - t.vector).max() <= 1e-3
    assert t.similarity(f16) >= 1 - 1e-5

    b8 = t.to_bytes("int8")
    i8 = Template.from_bytes(b8)
    assert i8.dim == t.dim and np.all(np.isfinite(i8.vector)) and i8.model_hash == HASH
    assert abs(float(np.linalg.norm(i8.vector)) - 1) < 1e-5
    # Half a quantisation step per component at most, before renormalisation:
    m = float(np.abs(t.vector).max())
    assert t.similarity(i8) >= 1 - 2 * t.dim * (m / 254) ** 2 - 1e-5
    assert i8.to_bytes("int8") == b8  # int8 decode/encode is idempotent


@pytest.mark.parametrize("dim", [1, 2, 128, 512, MAX_DIM])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_round_trip_edge_dims(dim, encoding):
    t = make(dim, seed=dim)
    back = Template.from_bytes(t.to_bytes(encoding))
    assert back.dim == dim and t.similarity(back) > 0.999


@pytest.mark.parametrize("seed", [909, 1905, 1971, 2462])
def test_f32_round_trip_is_bit_exact_where_renormalising_would_move_bits(seed):
    # For these vectors a float32 renormalisation moves a component by an ulp; Template keeps
    # vectors already unit to float32 precision as given, so re-wrapping and the f32 form are exact.
    t = Template(unit(np.random.default_rng(seed).standard_normal(3)), MODEL, HASH)
    assert Template(t.vector, MODEL, HASH).vector.tobytes() == t.vector.tobytes()
    back = Template.from_bytes(t.to_bytes("f32"))
    assert back.vector.tobytes() == t.vector.tobytes() and not back.vector.flags.writeable


def test_f32_round_trip_is_bit_exact_on_many_vectors():
    rng = np.random.default_rng(7)
    for _ in range(5000):
        t = Template(unit(rng.standard_normal(int(rng.integers(1, 130)))), MODEL, HASH)
        assert Template.from_bytes(t.to_bytes()).vector.tobytes() == t.vector.tobytes()


def test_accepts_bytearray_and_memoryview():
    b = make().to_bytes("int8")
    assert Template.from_bytes(bytearray(b)) == Template.from_bytes(memoryview(b)) == \
        Template.from_bytes(b)


def test_model_mismatch_survives_the_round_trip():
    a = Template.from_bytes(make(seed=1).to_bytes("int8"))
    b = Template.from_bytes(make(seed=2, model="arcface-r100").to_bytes("int8"))
    c = Template.from_bytes(make(seed=3, model_hash="fedcba9876543210").to_bytes("int8"))
    assert b.model == "arcface-r100" and c.model_hash == "fedcba9876543210"
    for other in (b, c):
        with pytest.raises(ModelMismatchError):
            a.similarity(other)


# --- score accuracy ---------------------------------------------------------------------------

def _decoded(vectors: np.ndarray, encoding: str) -> np.ndarray:
    return np.stack([Template.from_bytes(Template(v, MODEL, HASH).to_bytes(encoding)).vector
                     for v in vectors]).astype(np.float64)


def test_score_error_over_10000_pairs():
    rng = np.random.default_rng(2024)
    n = 10_000
    x = rng.standard_normal((n, 128))
    # Half independent pairs (cosine ~ 0, impostor-like), half correlated (genuine-like, 0.3..0.95).
    rho = np.concatenate([np.zeros(n // 2), rng.uniform(0.3, 0.95, n - n // 2)])[:, None]
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    y = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)
    ref = np.einsum("ij,ij->i", x.astype(np.float64), y.astype(np.float64))
    report = {}
    for enc, limit in (("int8", 0.005), ("f16", 1e-3)):
        xd, yd = _decoded(x, enc), _decoded(y, enc)
        both = np.abs(np.einsum("ij,ij->i", xd, yd) - ref).max()          # two stored templates
        one = np.abs(np.einsum("ij,ij->i", x.astype(np.float64), yd) - ref).max()  # live vs stored
        report[enc] = (both, one)
        assert both <= limit and one <= limit
    print(f"\nmax |cosine error| over {n} pairs (both decoded, one decoded): "
          + ", ".join(f"{k}: {a:.5f}, {b:.5f}" for k, (a, b) in report.items()))


@given(st.integers(0, 2**63), st.floats(0.0, 0.99))
@settings(deadline=None, max_examples=300)
def test_score_error_hypothesis(seed, rho):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(128)
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(128)
    a, b = Template(unit(x), MODEL, HASH), Template(unit(y), MODEL, HASH)
    ref = a.similarity(b)
    for enc, limit in (("int8", 0.005), ("f16", 1e-3)):
        ad, bd = (Template.from_bytes(t.to_bytes(enc)) for t in (a, b))
        assert abs(ad.similarity(bd) - ref) <= limit
        assert abs(a.similarity(bd) - ref) <= limit


# --- what cannot be serialised ----------------------------------------------------------------

def test_to_bytes_rejects_an_unknown_encoding():
    with pytest.raises(InputError, match="encoding"):
        make().to_bytes("bf16")


@pytest.mark.parametrize("model,model_hash", [
    (MODEL, "x" * 16), (MODEL, "0123456789ABCDEF"), (MODEL, "0123"), (MODEL, HASH + "00"),
    ("sface 2021", HASH), ("sfäce", HASH), ("m" * 65, HASH), ("tab\tid", HASH),
])
def test_to_bytes_rejects_unserialisable_identity(model, model_hash):
    with pytest.raises(TemplateError):
        make(model=model, model_hash=model_hash).to_bytes()


def test_to_bytes_rejects_too_many_dims():
    with pytest.raises(TemplateError, match="dim"):
        make(MAX_DIM + 1).to_bytes("int8")


# --- corrupt input: each case has its typed error ---------------------------------------------

@pytest.mark.parametrize("bad", ["MT...", None, 12, [77, 84], np.zeros(40, np.uint8)])
def test_non_bytes_input_is_an_input_error(bad):
    with pytest.raises(InputError):
        Template.from_bytes(bad)


def test_hand_built_blob_decodes():
    t = Template.from_bytes(build())
    assert (t.model, t.model_hash, t.dim) == (MODEL, HASH, 4)


F32_NAN = np.array([np.nan, 1, 0, 0], "<f4").tobytes()
CASES = {
    "empty": (b"", "too short"),
    "two bytes": (b"MT", "too short"),
    "header only": (build()[:12], "too short|truncated"),
    "wrong magic": (build(magic=b"TM"), "magic"),
    "version 0": (build(version=0), "version 0; supported: 1"),
    "version 2": (build(version=2), "version 2; supported: 1"),
    "encoding 3": (build(code=3), "encoding code 3"),
    "encoding 255": (build(code=255), "encoding code 255"),
    "dim 0": (build(dim=0), "dim"),
    "dim 4097": (build(dim=4097), "dim"),
    "dim 65535": (build(dim=65535), "dim"),
    "id len 0": (build(model=b"", id_len=0), "model id length"),
    "id len 65": (build(model=b"m" * 65), "model id length"),
    "id with space": (build(model=b"sface 2021"), "visible ASCII"),
    "id with NUL": (build(model=b"sface\x00"), "visible ASCII"),
    "id not ASCII": (build(model="sfäce".encode()), "visible ASCII"),
    "dim says more": (build(dim=5), "truncated"),
    "dim says less": (build(dim=3), "trailing"),
    "truncated": (build()[:-1], "truncated"),
    "trailing byte": (build() + b"\x00", "trailing"),
    "crc": (build()[:-1] + bytes([build()[-1] ^ 1]), "CRC"),
    "f32 NaN": (build(payload=F32_NAN), "NaN or infinite"),
    "f32 inf": (build(payload=np.array([np.inf, 0], "<f4").tobytes()), "NaN or infinite"),
    "f32 -inf": (build(payload=np.array([-np.inf, 0], "<f4").tobytes()), "NaN or infinite"),
    "f16 NaN": (build(code=1, payload=np.array([np.nan, 1], "<f2").tobytes()), "NaN or inf"),
    "f16 inf": (build(code=1, payload=np.array([np.inf, 0], "<f2").tobytes()), "NaN or inf"),
    "f32 zero": (build(payload=bytes(16)), "all-zero"),
    "f16 zero": (build(code=1, payload=bytes(8)), "all-zero"),
    "int8 zero": (build(code=2, payload=bytes(128)), "all-zero"),
    "f32 not unit": (build(payload=np.array([2, 0, 0], "<f4").tobytes()), "unit length"),
    "f32 huge": (build(payload=np.array([3e38, 3e38], "<f4").tobytes()), "unit length"),
    "int8 -128": (build(code=2, payload=b"\x80\x01"), "-128"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_corrupt_bytes_raise_template_format_error(name):
    blob, message = CASES[name]
    with pytest.raises(TemplateFormatError, match=message):
        Template.from_bytes(blob)


def test_int8_decode_is_scale_free():
    # Any non-zero int8 codes decode to the unit vector along them.
    t = Template.from_bytes(build(code=2, payload=bytes([3, 0, 256 - 4])))
    assert np.allclose(t.vector, [0.6, 0, -0.8], atol=1e-7)


# --- fuzzing: only typed errors, never a crash or a NaN ---------------------------------------

def _decode_or_typed_error(data: bytes) -> Template | None:
    try:
        t = Template.from_bytes(data)
    except TemplateFormatError:
        return None
    assert np.all(np.isfinite(t.vector)) and abs(float(np.linalg.norm(t.vector)) - 1) < 1e-5
    return t


@given(st.binary(max_size=700))
@FUZZ
def test_arbitrary_bytes(data):
    _decode_or_typed_error(data)


@given(st.binary(max_size=600))
@FUZZ
def test_arbitrary_bytes_behind_a_valid_prefix(data):
    _decode_or_typed_error(b"MT\x01" + data)


@given(st.sampled_from([0, 1, 2]), st.integers(1, 40), st.binary(max_size=200),
       st.booleans())
@FUZZ
def test_arbitrary_payload_with_a_valid_header_and_crc(code, dim, payload, pad):
    itemsize = {0: 4, 1: 2, 2: 1}[code]
    if pad:  # make the length right, so the value checks are what gets exercised
        payload = (payload * (dim * itemsize))[: dim * itemsize] or bytes(dim * itemsize)
    _decode_or_typed_error(build(code=code, dim=dim, payload=payload))


@given(st.sampled_from(list(ENCODINGS)), st.data())
@FUZZ
def test_any_single_byte_change_is_detected(encoding, data):
    blob = make(data.draw(st.integers(1, 130)), seed=data.draw(st.integers(0, 99))).to_bytes(
        encoding)
    i = data.draw(st.integers(0, len(blob) - 1))
    x = data.draw(st.integers(0, 255).filter(lambda x: x != blob[i]))
    with pytest.raises(TemplateFormatError):
        Template.from_bytes(blob[:i] + bytes([x]) + blob[i + 1:])


@given(st.sampled_from(list(ENCODINGS)), st.data())
@FUZZ
def test_single_byte_change_with_fixed_crc_is_never_a_nan(encoding, data):
    blob = make(data.draw(st.integers(1, 130)), seed=data.draw(st.integers(0, 99))).to_bytes(
        encoding)[:-4]
    i = data.draw(st.integers(0, len(blob) - 1))
    x = data.draw(st.integers(0, 255))
    _decode_or_typed_error(with_crc(blob[:i] + bytes([x]) + blob[i + 1:]))


@given(st.sampled_from(list(ENCODINGS)), st.data())
@FUZZ
def test_truncations_and_extensions(encoding, data):
    blob = make(data.draw(st.integers(1, 130))).to_bytes(encoding)
    n = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(TemplateFormatError):
        Template.from_bytes(blob[:n])
    with pytest.raises(TemplateFormatError):
        Template.from_bytes(blob + data.draw(st.binary(min_size=1, max_size=10)))


def test_every_error_is_a_matcher_error():
    assert issubclass(TemplateFormatError, TemplateError)
    assert issubclass(TemplateFormatError, InputError) and issubclass(InputError, MatcherError)
