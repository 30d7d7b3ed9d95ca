"""On-disk form of a gallery: atomic, checksummed, optionally encrypted (version 1).

==============  ===========  ================================================================
field           size         value
==============  ===========  ================================================================
magic           4            ``b"MGAL"``
version         u8           ``1``
flags           u8           bit 0: encrypted
key id          4            encrypted only: first 4 bytes of HMAC-SHA256(key, label)
nonce           12           encrypted only
body length     u64          bytes of the body that follows
body            ...          plaintext, or AES-256-GCM ciphertext + tag (AAD = the header)
sha256          32           SHA-256 of every byte before it
==============  ===========  ================================================================

The plaintext body is ``u32 JSON length | JSON (model, subjects, metadata...) | index bytes``.
Writing goes to a temporary file in the same directory, is fsynced and renamed over the target,
and the directory is fsynced, so a crash leaves either the old or the new file. No face image is
ever stored: only templates and the caller's metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from matcher.errors import GalleryFileError, InputError, TamperedError, WrongKeyError
from matcher.fileio import write_atomic  # noqa: F401  (re-exported for Gallery.save)

MAGIC = b"MGAL"
VERSION = 1
_FIXED = struct.Struct("<4sBB")
_LEN = struct.Struct("<Q")
_KEY_ID_LABEL = b"matcher gallery key id v1"
#: Largest gallery file read (a 10^7-template gallery with index is ~7 GB; refuse beyond this).
MAX_FILE_BYTES = 64 * 1024**3


def _key_id(key: bytes) -> bytes:
    return hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:4]


def _check_key(key: bytes | None) -> bytes | None:
    if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != 32):
        raise InputError("a gallery key must be 32 bytes (AES-256)")
    return bytes(key) if key is not None else None


def pack(meta: dict[str, Any], index_bytes: bytes, key: bytes | None) -> bytes:
    """File bytes for ``meta`` (JSON-able) and the serialised index."""
    key = _check_key(key)
    js = json.dumps(meta, separators=(",", ":")).encode()
    body = struct.pack("<I", len(js)) + js + index_bytes
    if key is None:
        header = _FIXED.pack(MAGIC, VERSION, 0) + _LEN.pack(len(body))
    else:
        nonce = os.urandom(12)
        header = (_FIXED.pack(MAGIC, VERSION, 1) + _key_id(key) + nonce
                  + _LEN.pack(len(body) + 16))
        body = AESGCM(key).encrypt(nonce, body, header)
    data = header + body
    return data + hashlib.sha256(data).digest()


def unpack(data: bytes, key: bytes | None, *, require_encryption: bool = False
           ) -> tuple[dict[str, Any], bytes]:
    """(meta, index bytes) from file bytes; typed errors for anything wrong."""
    key = _check_key(key)
    if len(data) < _FIXED.size + _LEN.size + 32:
        raise GalleryFileError(f"gallery file too short ({len(data)} bytes): truncated")
    magic, version, flags = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise GalleryFileError("not a matcher gallery file")
    if version != VERSION:
        raise GalleryFileError(f"unsupported gallery file version {version} (supported: {VERSION})")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise GalleryFileError("gallery file checksum mismatch: truncated or corrupt")
    encrypted = bool(flags & 1)
    if flags & ~1:
        raise GalleryFileError(f"unknown gallery file flags {flags:#x}")
    if require_encryption and not encrypted:
        raise GalleryFileError("gallery file is not encrypted, but encryption is required")
    pos = _FIXED.size
    if encrypted:
        if key is None:
            raise InputError("gallery file is encrypted: a key is needed to open it")
        kid, nonce = data[pos:pos + 4], data[pos + 4:pos + 16]
        pos += 16
        if not hmac.compare_digest(kid, _key_id(key)):
            raise WrongKeyError("gallery file was encrypted with a different key")
    (length,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    if pos + length != len(data) - 32:
        raise GalleryFileError("gallery file length fields are inconsistent")
    body = data[pos:pos + length]
    if encrypted:
        try:
            body = AESGCM(key).decrypt(nonce, body, data[:pos])
        except InvalidTag:
            raise TamperedError("gallery file failed authentication (altered)") from None
    if len(body) < 4:
        raise GalleryFileError("gallery file body too short")
    (jlen,) = struct.unpack_from("<I", body)
    if 4 + jlen > len(body):
        raise GalleryFileError("gallery file metadata length is out of range")
    try:
        meta = json.loads(body[4:4 + jlen], parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as exc:
        raise GalleryFileError(f"gallery metadata is not valid JSON: {exc}") from None
    except RecursionError:  # hostile nesting ([[[[...) exhausts the decoder's recursion
        raise GalleryFileError("gallery metadata is nested too deeply") from None
    if not isinstance(meta, dict):
        raise GalleryFileError("gallery metadata is not an object")
    return meta, body[4 + jlen:]


def _no_constant(name: str) -> float:
    # pack() never writes NaN / Infinity (metadata is checked with allow_nan=False); an int()
    # of one in Gallery.from_bytes would raise OverflowError instead of a typed error.
    raise ValueError(f"non-finite number {name} in gallery metadata")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):  # "nan" parses, and 1e999 parses as infinity
        raise ValueError(f"non-finite number {text[:20]} in gallery metadata")
    return v


def read(path: Path) -> bytes:
    """A gallery file's bytes (:class:`GalleryFileError` above MAX_FILE_BYTES or unreadable)."""
    from matcher.fileio import read_limited

    return read_limited(path, MAX_FILE_BYTES, too_large=GalleryFileError,
                        unreadable=GalleryFileError, what="gallery file ")
