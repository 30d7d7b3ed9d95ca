"""Sealed templates (AES-256-GCM) and their QR text form (Base45, RFC 9285)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import matcher
from matcher import base45
from matcher.errors import (
    ExpiredError,
    InputError,
    MatcherError,
    SealError,
    SealFormatError,
    TamperedError,
    TemplateError,
    WrongKeyError,
)
from matcher.sealing import inspect_sealed, key_id
from matcher.types import Template

MODEL = "sface-2021dec"
HASH = "0123456789abcdef"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
T0 = datetime(2030, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
BEFORE = T0 - timedelta(hours=1)
ISSUER = "NL-KMAR AMS"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make(dim: int = 128, seed: int = 0, model: str = MODEL, model_hash: str = HASH) -> Template:
    v = np.random.default_rng(seed).standard_normal(dim)
    return Template((v / np.linalg.norm(v)).astype(np.float32), model, model_hash)


def sealed(issuer: str = ISSUER, **kw) -> bytes:
    return matcher.seal(make(), KEY, expires_at=T0, issuer=issuer, **kw)


def regions(issuer: str = ISSUER) -> dict[str, slice]:
    """Byte ranges of each field of a sealed 128-d int8 template, from the documented layout."""
    i = 27 + 1 + len(issuer.encode())
    m = i + 1 + len(MODEL)
    end = m + 8 + 160 + 16
    return {"magic": slice(0, 2), "version": slice(2, 3), "key id": slice(3, 7),
            "nonce": slice(7, 19), "expires": slice(19, 27), "issuer len": slice(27, 28),
            "issuer": slice(28, i), "model id len": slice(i, i + 1), "model id": slice(i + 1, m),
            "model hash": slice(m, m + 8), "ciphertext": slice(m + 8, end - 16),
            "tag": slice(end - 16, end)}


def flip(blob: bytes, i: int, mask: int = 0x01) -> bytes:
    return blob[:i] + bytes([blob[i] ^ mask]) + blob[i + 1:]


def hand_sealed(plaintext: bytes, *, model: bytes = MODEL.encode(), mhash: bytes =
                bytes.fromhex(HASH), expires: int = int(T0.timestamp()), key: bytes = KEY) -> bytes:
    """A blob built from the documented layout with the cryptography library directly."""
    kid = hmac.new(key, b"matcher seal key id v1", hashlib.sha256).digest()[:4]
    nonce = bytes(12)
    header = (b"MS\x01" + kid + nonce + struct.pack("<Q", expires) + b"\x00"
              + bytes([len(model)]) + model + mhash)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


# --- round trip and layout --------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["int8", "f16", "f32"])
def test_round_trip(encoding):
    t = make()
    blob = matcher.seal(t, KEY, expires_at=T0, issuer=ISSUER, encoding=encoding)
    back = matcher.unseal(blob, KEY, now=BEFORE)
    assert back == Template.from_bytes(t.to_bytes(encoding))
    assert (back.model, back.model_hash) == (MODEL, HASH)
    assert t.similarity(back) > 0.9999
    text = matcher.seal_text(t, KEY, expires_at=T0, encoding=encoding)
    assert matcher.unseal_text(text, KEY, now=BEFORE) == back


def test_blob_follows_the_documented_layout():
    t = make()
    blob = sealed()
    r = regions()
    assert len(blob) == r["tag"].stop == 226 + len(ISSUER)
    assert blob[r["magic"]] == b"MS" and blob[2] == 1
    assert blob[r["key id"]] == hmac.new(KEY, b"matcher seal key id v1", "sha256").digest()[:4]
    assert blob[r["key id"]] == key_id(KEY)
    assert struct.unpack("<Q", blob[r["expires"]])[0] == int(T0.timestamp())
    assert blob[27] == len(ISSUER) and blob[r["issuer"]] == ISSUER.encode()
    assert blob[r["model id"]] == MODEL.encode() and blob[r["model hash"]] == bytes.fromhex(HASH)
    header = blob[: r["ciphertext"].start]
    # AAD is the whole header: decrypting with it by hand gives the int8 template bytes.
    assert AESGCM(KEY).decrypt(blob[r["nonce"]], blob[len(header):], header) == t.to_bytes("int8")
    assert matcher.unseal(hand_sealed(t.to_bytes("f16")), KEY, now=BEFORE) == \
        Template.from_bytes(t.to_bytes("f16"))


def test_nonce_is_fresh_each_time():
    a, b = sealed(), sealed()
    assert a[7:19] != b[7:19] and a[27:] != b[27:]


def test_sizes_fit_a_qr_code():
    blob, text = sealed(issuer=""), matcher.seal_text(make(), KEY, expires_at=T0)
    named = matcher.seal_text(make(), KEY, expires_at=T0, issuer=ISSUER)
    longest = matcher.seal_text(make(), KEY, expires_at=T0, issuer="x" * 32)  # the maximum
    print(f"\nsealed int8 128-d: {len(blob)} bytes; text {len(text)} chars "
          f"(issuer {ISSUER!r}: {len(named)}; 32-byte issuer: {len(longest)}); "
          f"f32 sealed: {len(sealed('', encoding='f32'))} bytes")
    assert len(blob) == 226 and len(text) == 4 + 113 * 3 == 343
    assert len(text) <= 400 and len(named) <= 400 and len(longest) <= 400
    assert text.startswith("MS1:") and set(text[4:]) <= set(base45.ALPHABET)


def test_inspect_is_an_unauthenticated_preview():
    blob = sealed()
    info = inspect_sealed(blob)
    assert info == {"version": 1, "key_id": key_id(KEY).hex(), "issuer": ISSUER, "expires_at": T0,
                    "model": MODEL, "model_hash": HASH}
    assert inspect_sealed(matcher.seal_text(make(), KEY, expires_at=T0, issuer=ISSUER)) == info
    forged = flip(blob, regions()["issuer"].start)  # readable without a key, but never unseals
    assert inspect_sealed(forged)["issuer"] != ISSUER
    with pytest.raises(TamperedError):
        matcher.unseal(forged, KEY, now=BEFORE)


# --- tampering --------------------------------------------------------------------------------

@pytest.mark.parametrize("region,error", [
    ("key id", WrongKeyError), ("nonce", TamperedError), ("expires", TamperedError),
    ("issuer", TamperedError), ("model id", TamperedError), ("model hash", TamperedError),
    ("ciphertext", TamperedError), ("tag", TamperedError),
    ("magic", SealFormatError), ("version", SealFormatError),
])
@pytest.mark.parametrize("mask", [0x01, 0x80, 0x5A])
def test_tamper_of_each_byte_of_each_region(region, error, mask):
    blob = sealed()
    for i in range(*regions()[region].indices(len(blob))):
        with pytest.raises(error):
            matcher.unseal(flip(blob, i, mask), KEY, now=BEFORE)


@pytest.mark.parametrize("region", ["issuer len", "model id len"])
def test_tamper_of_a_length_byte(region):
    blob = sealed()
    i = regions()[region].start
    for x in range(256):
        if x != blob[i]:
            with pytest.raises((SealFormatError, TamperedError)):
                matcher.unseal(blob[:i] + bytes([x]) + blob[i + 1:], KEY, now=BEFORE)


def test_extending_an_expiry_is_tampering():
    blob = sealed()
    later = struct.pack("<Q", int((T0 + timedelta(days=3650)).timestamp()))
    with pytest.raises(TamperedError):
        matcher.unseal(blob[:19] + later + blob[27:], KEY, now=T0 + timedelta(days=1))


def test_wrong_key():
    with pytest.raises(WrongKeyError, match="key id"):
        matcher.unseal(sealed(), OTHER_KEY, now=BEFORE)


def test_a_key_id_collision_is_still_caught():
    blob = sealed()
    forged = blob[:3] + key_id(OTHER_KEY) + blob[7:]  # as if OTHER_KEY's id collided with KEY's
    with pytest.raises(TamperedError):
        matcher.unseal(forged, OTHER_KEY, now=BEFORE)


def test_authentic_header_model_differing_from_the_template_is_tampered():
    t = make()
    with pytest.raises(TamperedError, match="model"):
        matcher.unseal(hand_sealed(t.to_bytes(), model=b"arcface-r100"), KEY, now=BEFORE)
    with pytest.raises(TamperedError, match="model"):
        matcher.unseal(hand_sealed(t.to_bytes(), mhash=bytes(8)), KEY, now=BEFORE)


def test_authentic_but_malformed_payload_is_a_format_error():
    with pytest.raises(SealFormatError, match="payload"):
        matcher.unseal(hand_sealed(b"not a template at all, honest"), KEY, now=BEFORE)


# --- expiry -----------------------------------------------------------------------------------

def test_expiry():
    blob = sealed()
    assert matcher.unseal(blob, KEY, now=T0 - timedelta(microseconds=1)) is not None
    with pytest.raises(ExpiredError, match="2030-06-01T12:00:00"):
        matcher.unseal(blob, KEY, now=T0)  # exactly at expiry: expired
    with pytest.raises(ExpiredError, match="2030-06-01T12:00:00"):
        matcher.unseal(blob, KEY, now=T0 + timedelta(seconds=1))


def test_expiry_in_another_timezone_is_the_same_instant():
    cet = timezone(timedelta(hours=2))
    blob = matcher.seal(make(), KEY, expires_at=T0.astimezone(cet))
    assert struct.unpack("<Q", blob[19:27])[0] == int(T0.timestamp())
    with pytest.raises(ExpiredError):
        matcher.unseal(blob, KEY, now=datetime(2030, 6, 1, 14, 0, tzinfo=cet))


def test_fractional_expiry_is_rounded_down():
    blob = matcher.seal(make(), KEY, expires_at=T0 + timedelta(milliseconds=500))
    with pytest.raises(ExpiredError):
        matcher.unseal(blob, KEY, now=T0 + timedelta(milliseconds=200))


def test_default_now_is_the_clock():
    now = datetime.now(timezone.utc)
    assert matcher.unseal(matcher.seal(make(), KEY, expires_at=now + timedelta(minutes=5)), KEY)
    with pytest.raises(ExpiredError):
        matcher.unseal(matcher.seal(make(), KEY, expires_at=now - timedelta(seconds=1)), KEY)


# --- bad arguments ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", [b"", bytes(16), bytes(31), bytes(33), bytes(64), "k" * 32, None,
                                 list(range(32))])
def test_bad_key_is_an_input_error(key):
    with pytest.raises(InputError, match="key"):
        matcher.seal(make(), key, expires_at=T0)
    with pytest.raises(InputError, match="key"):
        matcher.unseal(sealed(), key, now=BEFORE)


def test_key_as_bytearray_or_memoryview():
    blob = matcher.seal(make(), bytearray(KEY), expires_at=T0)
    assert matcher.unseal(blob, memoryview(KEY), now=BEFORE) == \
        matcher.unseal(blob, KEY, now=BEFORE)


def test_naive_or_bad_datetimes_are_input_errors():
    with pytest.raises(InputError, match="timezone-aware"):
        matcher.seal(make(), KEY, expires_at=datetime(2030, 1, 1))
    with pytest.raises(InputError, match="timezone-aware"):
        matcher.unseal(sealed(), KEY, now=datetime(2030, 1, 1))
    for bad in ("2030-01-01", 1_900_000_000, T0.date()):
        with pytest.raises(InputError):
            matcher.seal(make(), KEY, expires_at=bad)
        with pytest.raises(InputError):
            matcher.unseal(sealed(), KEY, now=bad)
    with pytest.raises(InputError, match="1970"):
        matcher.seal(make(), KEY, expires_at=datetime(1969, 12, 31, tzinfo=timezone.utc))


def test_issuer_limits():
    assert inspect_sealed(sealed(issuer="é" * 16))["issuer"] == "é" * 16  # 32 UTF-8 bytes
    assert inspect_sealed(sealed(issuer="x" * 32))["issuer"] == "x" * 32
    for bad in ("x" * 33, "é" * 17):
        with pytest.raises(InputError, match="issuer"):
            sealed(issuer=bad)
    for bad in (b"bytes", None, "\ud800"):
        with pytest.raises(InputError, match="issuer"):
            sealed(issuer=bad)


def test_bad_template_or_encoding():
    with pytest.raises(InputError):
        matcher.seal(make().vector, KEY, expires_at=T0)
    with pytest.raises(InputError, match="encoding"):
        sealed(encoding="int4")
    with pytest.raises(TemplateError):
        matcher.seal(make(model_hash="x" * 16), KEY, expires_at=T0)


@pytest.mark.parametrize("blob", [b"", b"MS", b"MS\x01", b"XX" + sealed()[2:],
                                  b"MS\x02" + sealed()[3:], b"MS\x00" + sealed()[3:],
                                  sealed()[:40], sealed()[:60], "MS1:...", None, 42])
def test_malformed_blobs(blob):
    with pytest.raises(SealFormatError):
        matcher.unseal(blob, KEY, now=BEFORE)


def test_unknown_version_names_the_supported_ones():
    with pytest.raises(SealFormatError, match="version 2; supported: 1"):
        matcher.unseal(b"MS\x02" + sealed()[3:], KEY, now=BEFORE)


def test_error_classes():
    classes = [SealFormatError, WrongKeyError, TamperedError, ExpiredError]
    assert len(set(classes)) == 4 and all(issubclass(c, SealError) for c in classes)
    for a in classes:
        for b in classes:
            assert a is b or not issubclass(a, b)
    assert issubclass(SealError, MatcherError) and issubclass(SealFormatError, InputError)


# --- fuzzing ----------------------------------------------------------------------------------

def _unseal_or_typed_error(blob, key=KEY) -> None:
    try:
        t = matcher.unseal(blob, key, now=BEFORE)
    except MatcherError:
        return
    assert np.all(np.isfinite(t.vector))


@given(st.binary(max_size=400))
@FUZZ
def test_arbitrary_bytes(data):
    _unseal_or_typed_error(data)


@given(st.binary(max_size=400))
@FUZZ
def test_arbitrary_bytes_behind_a_valid_prefix_and_key_id(data):
    _unseal_or_typed_error(b"MS\x01" + key_id(KEY) + data)


@given(st.data())
@FUZZ
def test_any_single_byte_change_fails(data):
    blob = sealed(issuer=data.draw(st.sampled_from(["", ISSUER])),
                  encoding=data.draw(st.sampled_from(["int8", "f16", "f32"])))
    i = data.draw(st.integers(0, len(blob) - 1))
    # XOR with a non-zero mask: always a change, and the drawn data does not depend on the
    # blob's bytes (its nonce is fresh on every call; hypothesis needs replays to draw alike).
    x = blob[i] ^ data.draw(st.integers(1, 255))
    with pytest.raises(SealError):
        matcher.unseal(blob[:i] + bytes([x]) + blob[i + 1:], KEY, now=BEFORE)


@given(st.data())
@FUZZ
def test_truncations_and_extensions_fail(data):
    blob = sealed()
    n = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(SealError):
        matcher.unseal(blob[:n], KEY, now=BEFORE)
    with pytest.raises(TamperedError):
        matcher.unseal(blob + data.draw(st.binary(min_size=1, max_size=20)), KEY, now=BEFORE)


# --- text form --------------------------------------------------------------------------------

def test_text_tolerates_surrounding_whitespace():
    text = matcher.seal_text(make(), KEY, expires_at=T0)
    assert matcher.unseal_text(f"  {text}\r\n", KEY, now=BEFORE) == \
        matcher.unseal_text(text, KEY, now=BEFORE)


@pytest.mark.parametrize("mangle", [
    lambda s: s[4:], lambda s: "MS2:" + s[4:], lambda s: s.lower(), lambda s: s[:-1],
    lambda s: s + "A", lambda s: s[:10] + "#" + s[11:], lambda s: s[:10] + "\u00e9" + s[11:],
    lambda s: "MS1:", lambda s: b"MS1:",
])
def test_malformed_text(mangle):
    text = matcher.seal_text(make(), KEY, expires_at=T0)
    with pytest.raises(SealError):
        matcher.unseal_text(mangle(text), KEY, now=BEFORE)


@given(st.text(max_size=400))
@FUZZ
def test_arbitrary_text(text):
    with pytest.raises(MatcherError):
        matcher.unseal_text(text, KEY, now=BEFORE)
    with pytest.raises(MatcherError):
        matcher.unseal_text("MS1:" + text, KEY, now=BEFORE)


@functools.cache
def _sealed_text() -> str:
    """One sealed QR text for all examples: sealing draws a fresh nonce, and hypothesis needs the
    data its strategies filter on to be the same in every replay."""
    return matcher.seal_text(make(), KEY, expires_at=T0)


@given(st.data())
@FUZZ
def test_any_single_character_change_fails(data):
    text = _sealed_text()
    i = data.draw(st.integers(0, len(text) - 1))
    ch = data.draw(st.sampled_from(base45.ALPHABET + "a#\u00e9").filter(lambda c: c != text[i]))
    with pytest.raises(SealError):
        matcher.unseal_text(text[:i] + ch + text[i + 1:], KEY, now=BEFORE)


# --- Base45 (RFC 9285) ------------------------------------------------------------------------

RFC_EXAMPLES = [(b"AB", "BB8"), (b"Hello!!", "%69 VD92EX0"), (b"base-45", "UJCLQE7W581"),
                (b"ietf!", "QED8WEX0"), (b"", "")]


@pytest.mark.parametrize("raw,text", RFC_EXAMPLES)
def test_base45_rfc_examples(raw, text):
    assert base45.encode(raw) == text and base45.decode(text) == raw


@pytest.mark.parametrize("text,message", [
    ("GGW", "65535"),            # RFC 9285 section 4.2: 65536 is not a valid group
    (":::", "65535"), ("::", "255"), ("A", "length"), ("BB8A", "length"),
    ("bb8", "character"), ("BB#", "character"), ("BB\u00e9", "character"),
])
def test_base45_rejects(text, message):
    with pytest.raises(SealFormatError, match=message):
        base45.decode(text)


def test_base45_rejects_non_text():
    with pytest.raises(SealFormatError):
        base45.decode(b"BB8")


@given(st.binary(max_size=300))
@settings(deadline=None)
def test_base45_round_trip(data):
    text = base45.encode(data)
    assert len(text) == len(data) // 2 * 3 + len(data) % 2 * 2
    assert base45.decode(text) == data


@given(st.text(alphabet=base45.ALPHABET, max_size=60))
@settings(deadline=None)
def test_base45_decode_is_canonical_or_refuses(text):
    try:
        raw = base45.decode(text)
    except SealFormatError:
        return
    assert base45.encode(raw) == text
