"""Portable binary form of a :class:`~matcher.types.Template` (version 1).

All integers are little-endian.

==============  ===========  =============================================================
field           size         value
==============  ===========  =============================================================
magic           2            ``b"MT"``
version         u8           ``1``
encoding        u8           ``0`` = f32, ``1`` = f16, ``2`` = int8
dim             u16          1 .. 4096
model id len    u8           1 .. 64
model id        len bytes    visible ASCII (0x21 .. 0x7E), e.g. ``sface-2021dec``
model hash      8            the 16 lowercase hex chars of ``Template.model_hash`` as raw bytes
payload         see right    f32: ``dim * 4``; f16: ``dim * 2``; int8: ``dim``
crc32           u32          ``zlib.crc32`` of every byte before it
==============  ===========  =============================================================

int8 codes are ``round(v / max|v| * 127)`` clipped to [-127, 127]; no scale is stored because
templates are unit vectors: decoding is ``q / ||q||``. f16 and int8 are renormalised on decode.
A 128-d ``sface-2021dec`` template is 160 bytes in int8, 288 in f16, 544 in f32.

Decoding never trusts the input: anything malformed is a :class:`TemplateFormatError`.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import TYPE_CHECKING

import numpy as np

from matcher.errors import InputError, TemplateError, TemplateFormatError

if TYPE_CHECKING:
    from matcher.types import Template

MAGIC = b"MT"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: Encoding name -> (code, numpy dtype of the payload).
ENCODINGS: dict[str, tuple[int, str]] = {"f32": (0, "<f4"), "f16": (1, "<f2"), "int8": (2, "i1")}
_BY_CODE = {code: (name, dtype) for name, (code, dtype) in ENCODINGS.items()}
MAX_DIM = 4096
MAX_MODEL_ID = 64
HASH_BYTES = 8
INT8_MAX = 127

_HEADER = struct.Struct("<2sBBHB")  # magic, version, encoding, dim, model id length
_CRC = struct.Struct("<I")
_HASH_RE = re.compile(r"[0-9a-f]{16}")
#: Smallest possible blob: header, 1-byte model id, hash, one int8 value, CRC.
MIN_SIZE = _HEADER.size + 1 + HASH_BYTES + 1 + _CRC.size


def model_id_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not a valid model id (1..64 visible ASCII bytes), or ``None`` if it is."""
    if not 1 <= len(raw) <= MAX_MODEL_ID:
        return f"model id must be 1..{MAX_MODEL_ID} bytes, got {len(raw)}"
    if any(b < 0x21 or b > 0x7E for b in raw):
        return f"model id must be visible ASCII (0x21..0x7E), got {raw!r}"
    return None


def model_hash_bytes(model_hash: str) -> bytes | None:
    """The 8 raw bytes of a 16-lowercase-hex-char model hash, or ``None`` if it is not one."""
    if not isinstance(model_hash, str) or not _HASH_RE.fullmatch(model_hash):
        return None
    return bytes.fromhex(model_hash)


def encoded_size(dim: int, model: str, encoding: str = "f32") -> int:
    """Size in bytes of a serialised template."""
    itemsize = np.dtype(ENCODINGS[encoding][1]).itemsize
    return _HEADER.size + len(model.encode("ascii")) + HASH_BYTES + dim * itemsize + _CRC.size


def encode(template: Template, encoding: str = "f32") -> bytes:
    """Serialise ``template``; ``encoding`` is ``"f32"`` (lossless), ``"f16"`` or ``"int8"``."""
    if encoding not in ENCODINGS:
        raise InputError(f"unknown template encoding {encoding!r}; use one of {sorted(ENCODINGS)}")
    code, dtype = ENCODINGS[encoding]
    try:
        model = template.model.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise TemplateError(f"model id {template.model!r} is not ASCII") from None
    problem = model_id_problem(model)
    if problem:
        raise TemplateError(f"cannot serialise template: {problem}")
    mhash = model_hash_bytes(template.model_hash)
    if mhash is None:
        raise TemplateError(
            f"cannot serialise template: model hash must be 16 lowercase hex chars, "
            f"got {template.model_hash!r}")
    v = np.asarray(template.vector, dtype=np.float32)
    if not 1 <= v.size <= MAX_DIM:
        raise TemplateError(f"cannot serialise template: dim must be 1..{MAX_DIM}, got {v.size}")
    if encoding == "int8":
        v64 = v.astype(np.float64)
        scale = INT8_MAX / float(np.max(np.abs(v64)))
        payload = np.clip(np.rint(v64 * scale), -INT8_MAX, INT8_MAX).astype(dtype).tobytes()
    else:
        payload = v.astype(dtype).tobytes()
    body = b"".join((_HEADER.pack(MAGIC, VERSION, code, v.size, len(model)), model, mhash, payload))
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes | bytearray | memoryview) -> Template:
    """Parse bytes made by :func:`encode`; raise :class:`TemplateFormatError` if malformed."""
    from matcher.types import EXACT_UNIT, UNIT_TOLERANCE, Template

    if isinstance(data, memoryview):
        data = data.tobytes()
    elif isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    else:
        raise InputError(f"a serialised template must be bytes, got {type(data).__name__}")
    if len(data) < MIN_SIZE:
        raise TemplateFormatError(f"template bytes too short: {len(data)} < {MIN_SIZE}")
    magic, version, code, dim, id_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise TemplateFormatError(f"not a serialised template: magic {magic!r}, expected {MAGIC!r}")
    if version not in SUPPORTED_VERSIONS:
        raise TemplateFormatError(
            f"unsupported template format version {version}; supported: "
            + ", ".join(map(str, SUPPORTED_VERSIONS)))
    if code not in _BY_CODE:
        raise TemplateFormatError(
            f"unknown template encoding code {code}; known: "
            + ", ".join(f"{c}={n}" for c, (n, _) in sorted(_BY_CODE.items())))
    name, dtype = _BY_CODE[code]
    if not 1 <= dim <= MAX_DIM:
        raise TemplateFormatError(f"template dim must be 1..{MAX_DIM}, got {dim}")
    if not 1 <= id_len <= MAX_MODEL_ID:
        raise TemplateFormatError(f"model id length must be 1..{MAX_MODEL_ID}, got {id_len}")
    pos = _HEADER.size
    payload_len = dim * np.dtype(dtype).itemsize
    expected = pos + id_len + HASH_BYTES + payload_len + _CRC.size
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise TemplateFormatError(
            f"template bytes {what}: {len(data)} bytes, header implies {expected}")
    (crc,) = _CRC.unpack_from(data, expected - _CRC.size)
    if zlib.crc32(data[: expected - _CRC.size]) != crc:
        raise TemplateFormatError("template CRC32 mismatch: bytes are corrupt")
    model_raw = data[pos: pos + id_len]
    problem = model_id_problem(model_raw)
    if problem:
        raise TemplateFormatError(problem)
    pos += id_len
    model_hash = data[pos: pos + HASH_BYTES].hex()
    pos += HASH_BYTES
    raw = np.frombuffer(data, dtype=dtype, count=dim, offset=pos)

    if name == "int8":
        if np.any(raw == -INT8_MAX - 1):
            raise TemplateFormatError("int8 template code -128 is out of range [-127, 127]")
        vec = raw.astype(np.float64)
    else:
        if not np.all(np.isfinite(raw)):
            raise TemplateFormatError(f"{name} template payload has NaN or infinite values")
        vec = raw.astype(np.float64)
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise TemplateFormatError("template payload is an all-zero vector")
    if name != "int8" and abs(norm - 1.0) > UNIT_TOLERANCE:
        raise TemplateFormatError(f"{name} template payload is not unit length (norm {norm:.6f})")
    # A stored f32 vector that is already unit (to float32 precision) is kept bit for bit, so the
    # f32 round trip is lossless; Template only renormalises vectors further from unit length.
    unit = raw.copy() if name == "f32" and abs(norm - 1.0) <= EXACT_UNIT else vec / norm
    try:
        return Template(unit, model=model_raw.decode("ascii"), model_hash=model_hash)
    except TemplateError as e:  # belt and braces: the checks above should make this unreachable
        raise TemplateFormatError(f"invalid template: {e}") from e
