"""Sealed templates: a template encrypted and authenticated for a QR code or a card (version 1).

AES-256-GCM with a 32-byte key. All integers are little-endian.

==============  ===========  =============================================================
field           size         value
==============  ===========  =============================================================
magic           2            ``b"MS"``
version         u8           ``1``
key id          4            first 4 bytes of ``HMAC-SHA256(key, b"matcher seal key id v1")``
nonce           12           random (``os.urandom``)
expires         u64          expiry, whole seconds since 1970-01-01 UTC (fractions dropped)
issuer len      u8           0 .. 32
issuer          len bytes    UTF-8
model id len    u8           1 .. 64
model id        len bytes    visible ASCII, as in :mod:`matcher.template_format`
model hash      8            the model hash as raw bytes
ciphertext      rest         GCM ciphertext + 16-byte tag of ``template.to_bytes(encoding)``
==============  ===========  =============================================================

The GCM associated data is every byte before the ciphertext, so the header (expiry, issuer,
model, key id) cannot be altered without :class:`TamperedError`. A blob is expired when
``now >= expires``. Text form: ``"MS1:" + Base45(blob)`` (RFC 9285), QR alphanumeric-mode safe.

Errors: :class:`SealFormatError` (not a sealed template / malformed), :class:`WrongKeyError`
(key id differs; a different key whose 32-bit id collides gives :class:`TamperedError`),
:class:`TamperedError`, :class:`ExpiredError`; bad arguments are :class:`InputError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from matcher import base45
from matcher.errors import (
    ExpiredError,
    InputError,
    SealFormatError,
    TamperedError,
    TemplateFormatError,
    WrongKeyError,
)
from matcher.template_format import HASH_BYTES, MAX_MODEL_ID, model_id_problem
from matcher.template_format import MIN_SIZE as MIN_TEMPLATE_SIZE
from matcher.types import Template

MAGIC = b"MS"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
TEXT_PREFIX = "MS1:"
KEY_BYTES = 32
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
#: 32 bytes keeps every sealed int8 128-d template's QR text within 400 characters (391).
MAX_ISSUER = 32
_KEY_ID_LABEL = b"matcher seal key id v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIXED = struct.Struct("<2sB4s12sQ")  # magic, version, key id, nonce, expires
#: Smallest possible blob: fixed part, empty issuer, 1-byte model id, hash, tag, smallest template.
MIN_SIZE = _FIXED.size + 1 + 2 + HASH_BYTES + TAG_BYTES + MIN_TEMPLATE_SIZE


def key_id(key: bytes) -> bytes:
    """The 4-byte key id stored in a sealed blob (identifies the key without revealing it)."""
    return hmac.new(_check_key(key), _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_BYTES]


def seal(template: Template, key: bytes, *, expires_at: datetime, issuer: str = "",
         encoding: str = "int8") -> bytes:
    """Encrypt and authenticate ``template`` until ``expires_at`` (timezone-aware)."""
    key = _check_key(key)
    if not isinstance(template, Template):
        raise InputError(f"seal() needs a Template, got {type(template).__name__}")
    expires = _epoch_seconds(expires_at, "expires_at")
    if expires > 0xFFFF_FFFF_FFFF_FFFF:  # unreachable with datetime (year <= 9999); kept explicit
        raise InputError("expires_at is out of range")
    if not isinstance(issuer, str):
        raise InputError(f"issuer must be str, got {type(issuer).__name__}")
    try:
        issuer_raw = issuer.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"issuer is not encodable as UTF-8: {e}") from None
    if len(issuer_raw) > MAX_ISSUER:
        raise InputError(f"issuer must be at most {MAX_ISSUER} UTF-8 bytes, got {len(issuer_raw)}")
    plaintext = template.to_bytes(encoding)  # validates the model id, hash and encoding
    model_raw = template.model.encode("ascii")
    nonce = os.urandom(NONCE_BYTES)
    header = b"".join((
        _FIXED.pack(MAGIC, VERSION, key_id(key), nonce, expires),
        bytes((len(issuer_raw),)), issuer_raw,
        bytes((len(model_raw),)), model_raw,
        bytes.fromhex(template.model_hash),
    ))
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def unseal(blob: bytes, key: bytes, *, now: datetime | None = None) -> Template:
    """Decrypt and verify a sealed template; ``now`` (timezone-aware) defaults to the clock."""
    key = _check_key(key)
    now_dt = datetime.now(timezone.utc) if now is None else now
    now_delta = _since_epoch(now_dt, "now")
    h = _parse(blob)
    expected_id = key_id(key)
    if not hmac.compare_digest(h.key_id, expected_id):
        raise WrongKeyError(f"sealed with key id {h.key_id.hex()}, the given key's id is "
                            f"{expected_id.hex()}")
    try:
        plaintext = AESGCM(key).decrypt(h.nonce, h.ciphertext, h.aad)
    except InvalidTag:
        raise TamperedError("sealed template failed authentication: header or ciphertext "
                            "was altered") from None
    # Authentic from here on: a failure below means the sealer produced a bad blob.
    try:
        template = Template.from_bytes(plaintext)
    except TemplateFormatError as e:
        raise SealFormatError(f"sealed template payload is malformed: {e}") from e
    problem = model_id_problem(h.model_raw)
    if problem:
        raise SealFormatError(f"sealed header: {problem}")
    if template.model.encode("ascii") != h.model_raw or template.model_hash != h.model_hash.hex():
        raise TamperedError(
            f"sealed header says model {h.model_raw.decode('ascii')}#{h.model_hash.hex()}, "
            f"the template inside is {template.model}#{template.model_hash}")
    # Whole seconds, compared as ints: a u64 expiry can exceed timedelta's range (OverflowError).
    if now_delta.days * 86400 + now_delta.seconds >= h.expires:
        raise ExpiredError(f"sealed template expired at {_format_expiry(h.expires)} "
                           f"(now {now_dt.astimezone(timezone.utc).isoformat()})")
    return template


def seal_text(template: Template, key: bytes, *, expires_at: datetime, issuer: str = "",
              encoding: str = "int8") -> str:
    """:func:`seal` as QR-code text: ``"MS1:" + Base45(blob)``."""
    blob = seal(template, key, expires_at=expires_at, issuer=issuer, encoding=encoding)
    return TEXT_PREFIX + base45.encode(blob)


def unseal_text(text: str, key: bytes, *, now: datetime | None = None) -> Template:
    """:func:`unseal` for :func:`seal_text` output (surrounding whitespace is ignored)."""
    return unseal(_text_to_blob(text), key, now=now)


def inspect_sealed(blob: bytes | str) -> dict[str, Any]:
    """UNAUTHENTICATED preview of a sealed blob (or its text form) for logs: no key needed, so
    nothing here may be trusted until :func:`unseal` succeeds. Keys: ``version``, ``key_id``
    (hex), ``issuer``, ``expires_at`` (UTC datetime), ``model``, ``model_hash``."""
    h = _parse(_text_to_blob(blob) if isinstance(blob, str) else blob)
    problem = model_id_problem(h.model_raw)
    if problem:
        raise SealFormatError(f"sealed header: {problem}")
    try:
        issuer = h.issuer_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SealFormatError("sealed header: issuer is not UTF-8") from None
    try:
        expires_at = _EPOCH + timedelta(seconds=h.expires)
    except OverflowError:
        raise SealFormatError(f"sealed header: expiry {h.expires} is out of range") from None
    return {"version": VERSION, "key_id": h.key_id.hex(), "issuer": issuer,
            "expires_at": expires_at, "model": h.model_raw.decode("ascii"),
            "model_hash": h.model_hash.hex()}


@dataclass(frozen=True)
class _Header:
    key_id: bytes
    nonce: bytes
    expires: int
    issuer_raw: bytes
    model_raw: bytes
    model_hash: bytes
    aad: bytes
    ciphertext: bytes


def _parse(blob: bytes) -> _Header:
    """Split a blob into its fields; structural problems are :class:`SealFormatError`."""
    if isinstance(blob, memoryview):
        blob = blob.tobytes()
    elif isinstance(blob, (bytes, bytearray)):
        blob = bytes(blob)
    else:
        raise SealFormatError(f"a sealed template must be bytes, got {type(blob).__name__}")
    if len(blob) < _FIXED.size:
        raise SealFormatError(f"sealed blob too short: {len(blob)} bytes")
    magic, version, kid, nonce, expires = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise SealFormatError(f"not a sealed template: magic {magic!r}, expected {MAGIC!r}")
    if version not in SUPPORTED_VERSIONS:
        raise SealFormatError(f"unsupported sealed template version {version}; supported: "
                              + ", ".join(map(str, SUPPORTED_VERSIONS)))
    if len(blob) < MIN_SIZE:
        raise SealFormatError(f"sealed blob too short: {len(blob)} < {MIN_SIZE} bytes")
    pos = _FIXED.size
    issuer_len = blob[pos]
    if issuer_len > MAX_ISSUER:
        raise SealFormatError(f"sealed header: issuer length {issuer_len} > {MAX_ISSUER}")
    issuer_raw = blob[pos + 1: pos + 1 + issuer_len]
    pos += 1 + issuer_len
    if pos >= len(blob):
        raise SealFormatError(f"sealed blob truncated: {len(blob)} bytes, issuer ends at {pos}")
    model_len = blob[pos]
    if not 1 <= model_len <= MAX_MODEL_ID:
        raise SealFormatError(
            f"sealed header: model id length {model_len} not in 1..{MAX_MODEL_ID}")
    model_raw = blob[pos + 1: pos + 1 + model_len]
    pos += 1 + model_len
    model_hash = blob[pos: pos + HASH_BYTES]
    pos += HASH_BYTES
    if len(blob) - pos < TAG_BYTES + MIN_TEMPLATE_SIZE:
        raise SealFormatError(f"sealed blob truncated: {len(blob)} bytes, header ends at {pos}")
    return _Header(kid, nonce, expires, issuer_raw, model_raw, model_hash, blob[:pos], blob[pos:])


def _check_key(key: bytes) -> bytes:
    if isinstance(key, memoryview):
        key = key.tobytes()
    if not isinstance(key, (bytes, bytearray)):
        raise InputError(f"key must be {KEY_BYTES} bytes, got {type(key).__name__}")
    if len(key) != KEY_BYTES:
        raise InputError(f"key must be exactly {KEY_BYTES} bytes (AES-256), got {len(key)}")
    return bytes(key)


def _since_epoch(dt: datetime, what: str) -> timedelta:
    if not isinstance(dt, datetime):
        raise InputError(f"{what} must be a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InputError(f"{what} must be timezone-aware (e.g. tzinfo=timezone.utc), got {dt}")
    return dt - _EPOCH


def _epoch_seconds(dt: datetime, what: str) -> int:
    """Whole seconds since the epoch, fractions dropped (so a seal never outlives its expiry)."""
    delta = _since_epoch(dt, what)
    seconds = delta.days * 86400 + delta.seconds
    if seconds < 0:
        raise InputError(f"{what} must not be before 1970-01-01 UTC, got {dt.isoformat()}")
    return seconds


def _format_expiry(seconds: int) -> str:
    try:
        return (_EPOCH + timedelta(seconds=seconds)).isoformat()
    except OverflowError:
        return f"{seconds} s after 1970-01-01 UTC"


def _text_to_blob(text: str) -> bytes:
    if not isinstance(text, str):
        raise SealFormatError(f"sealed template text must be str, got {type(text).__name__}")
    text = text.strip()  # valid Base45 never ends in a space (its last character is <= 32)
    if not text.startswith(TEXT_PREFIX):
        raise SealFormatError(f"sealed template text must start with {TEXT_PREFIX!r}")
    return base45.decode(text[len(TEXT_PREFIX):])
