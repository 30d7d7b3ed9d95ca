"""e-Passport chip portraits: ICAO Doc 9303 (part 10) LDS Data Group 2 with ISO/IEC 19794-5 records.

Smart Departure: a gate verifies the live face against the portrait read from the traveller's
e-passport chip (after the reader has done chip access and passive authentication; this module
gets the DG2 bytes).

Layout parsed (BER-TLV, big-endian integers)::

    75 DG2
      7F61 biometric information group template
        02   number of instances (= number of 7F60 that follow)
        7F60 biometric information template (one per instance)
          A1   biometric header template: 80 ICAO header version, 81 biometric type (02 = face),
               82 subtype, 83 creation date, 85 validity, 86 creator, 87 format owner
               (0101 = ISO/IEC JTC 1 SC 37), 88 format type (0008 = ISO/IEC 19794-5 face)
          5F2E biometric data block: the ISO/IEC 19794-5:2005 facial record
          (or 7F2E, a constructed block; its plain data in 81 is read, enciphered 82 is refused)

ISO/IEC 19794-5:2005 facial record::

    general header (14 bytes)   "FAC\\0", "010\\0", record length u32 (whole record, header
                                included), number of facial images u16
    per image:
      facial information (20)   block length u32 (this image's data: 20 + 8 x points + 12 +
                                image bytes), feature points u16, gender u8, eye colour u8, hair
                                colour u8, property mask 3 bytes, expression u16, pose angles
                                yaw/pitch/roll 3 x u8, pose angle uncertainties 3 x u8
      feature points (8 each)   type u8, point u8 (major code high nibble, minor low), x u16,
                                y u16, reserved u16
      image information (12)    face image type u8, image data type u8 (0 JPEG, 1 JPEG 2000),
                                width u16, height u16, colour space u8, source type u8, device
                                type u16, quality u16
      image data

Pose angles are stored in 2-degree steps: 0 means unspecified, 1..181 mean
``(value - 1) * 2 - 180`` degrees (so 91 is 0 degrees, frontal); :class:`FaceImage` gives
degrees, or ``None`` for unspecified (and for the reserved values 182..255). Uncertainties are
kept as stored. Only the 2005 record ("010") is read; the 2011 edition ("030") is refused.

Untrusted input: every length is checked against what remains before anything is read or
sliced, long-form lengths have at most 4 bytes, indefinite lengths are refused, nesting is at
most :data:`MAX_DEPTH` levels, an element holds at most :data:`MAX_CHILDREN` elements, the input
is at most :data:`MAX_DG2_BYTES` and holds at most :data:`MAX_IMAGES` images, and nothing may
follow the DG2 or any record. Every malformed input raises :class:`DocumentError`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from matcher.decision import Decision
from matcher.errors import (
    DocumentError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    MatcherError,
    NoFaceError,
)
from matcher.image import ImageLike, load_image

#: Largest DG2 accepted (real ones are 10-100 KB; the LDS allows far less than this).
MAX_DG2_BYTES = 4 * 1024 * 1024
#: Most facial images accepted in one DG2, over all its templates and records.
MAX_IMAGES = 16
#: Deepest BER-TLV nesting read (DG2 needs 5: 75 / 7F61 / 7F60 / 7F2E / 81).
MAX_DEPTH = 8
#: Most elements inside one constructed element (a BHT has ~8; 7F61 has 1 + MAX_IMAGES).
MAX_CHILDREN = 64

TAG_DG2, TAG_BIGT, TAG_COUNT, TAG_BIT, TAG_BHT = 0x75, 0x7F61, 0x02, 0x7F60, 0xA1
TAG_BDB, TAG_BDB_CONSTRUCTED = 0x5F2E, 0x7F2E
#: Biometric header template values this module writes and, when present, requires.
BIOMETRIC_TYPE_FACE = 0x02
FORMAT_OWNER_SC37, FORMAT_TYPE_FACE = 0x0101, 0x0008
ICAO_HEADER_VERSION = 0x0101

FAC_MAGIC, FAC_VERSION_2005 = b"FAC\x00", b"010\x00"
_GENERAL_HEADER, _FACIAL_INFO, _FEATURE_POINT, _IMAGE_INFO = 14, 20, 8, 12
_FORMATS = {0: "jpeg", 1: "jpeg2000"}
_FORMAT_CODES = {v: k for k, v in _FORMATS.items()}

#: 19794-5 face image types (image information block).
IMAGE_TYPE_BASIC, IMAGE_TYPE_FULL_FRONTAL, IMAGE_TYPE_TOKEN_FRONTAL = 0, 1, 2


@dataclass(frozen=True)
class FaceImage:
    """One facial image of a 19794-5 record with its header fields (codes as stored, except the
    pose, in degrees). ``feature_points``: ``(type, major, minor, x, y)`` tuples."""

    data: bytes = field(repr=False)
    format: str  # "jpeg" | "jpeg2000"
    width: int
    height: int
    gender: int = 0  # 0 unspecified, 1 male, 2 female, 0xFF unknown
    eye_colour: int = 0
    hair_colour: int = 0
    property_mask: int = 0
    expression: int = 0
    pose: tuple[int | None, int | None, int | None] = (None, None, None)  # yaw, pitch, roll
    pose_uncertainty: tuple[int, int, int] = (0, 0, 0)
    feature_points: tuple[tuple[int, int, int, int, int], ...] = ()
    image_type: int = IMAGE_TYPE_FULL_FRONTAL
    colour_space: int = 0  # 0 unspecified, 1 RGB24, 2 YUV422, 3 grey8, 4 other
    source_type: int = 0
    device_type: int = 0
    quality: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


# ---------------------------------------------------------------------------- BER-TLV reading
_Element = tuple[int, int, int]  # tag, value start, value end


def _tlv(buf: bytes, pos: int, end: int) -> _Element:
    """One element at ``pos`` (which must end by ``end``): ``(tag, value start, value end)``."""
    if pos >= end:
        raise DocumentError(f"truncated: tag expected at offset {pos}")
    first = buf[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:  # multi-byte tag: continuation bytes have bit 8 set
        for _ in range(2):  # at most 3 tag bytes
            if pos >= end:
                raise DocumentError(f"truncated tag at offset {pos}")
            b = buf[pos]
            pos += 1
            tag = (tag << 8) | b
            if not b & 0x80:
                break
        else:
            raise DocumentError(f"tag longer than 3 bytes at offset {pos - 3}")
    if pos >= end:
        raise DocumentError(f"truncated: length expected at offset {pos}")
    b = buf[pos]
    pos += 1
    if b < 0x80:
        length = b
    elif b == 0x80:
        raise DocumentError(f"indefinite length at offset {pos - 1} (not allowed in the LDS)")
    else:
        n = b & 0x7F
        if n > 4:
            raise DocumentError(f"{n}-byte length at offset {pos - 1} (at most 4)")
        if n > end - pos:
            raise DocumentError(f"truncated length at offset {pos - 1}")
        length = int.from_bytes(buf[pos:pos + n], "big")
        pos += n
    if length > end - pos:
        raise DocumentError(f"tag {tag:X} at offset {pos}: length {length} exceeds the "
                            f"{end - pos} bytes left")
    return tag, pos, pos + length


def _children(buf: bytes, start: int, end: int, depth: int) -> list[_Element]:
    """The elements that exactly fill ``buf[start:end]``, at nesting level ``depth``."""
    if depth > MAX_DEPTH:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels")
    out = []
    pos = start
    while pos < end:
        if len(out) == MAX_CHILDREN:
            raise DocumentError(f"more than {MAX_CHILDREN} elements in one template")
        tag, vs, ve = _tlv(buf, pos, end)
        out.append((tag, vs, ve))
        pos = ve
    return out


def _one(kids: list[_Element], tags: tuple[int, ...], where: str) -> _Element:
    found = [k for k in kids if k[0] in tags]
    if len(found) != 1:
        names = " or ".join(f"{t:X}" for t in tags)
        raise DocumentError(f"{where}: expected one {names}, found {len(found)}")
    return found[0]


def _uint(buf: bytes, vs: int, ve: int, max_len: int, what: str) -> int:
    if not 1 <= ve - vs <= max_len:
        raise DocumentError(f"{what}: {ve - vs} bytes (1..{max_len} expected)")
    return int.from_bytes(buf[vs:ve], "big")


# ---------------------------------------------------------------------------- DG2 reading
def read_dg2(data: bytes) -> list[FaceImage]:
    """Every facial image of an LDS DG2, in order; :class:`DocumentError` for anything malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DocumentError(f"DG2 must be bytes, got {type(data).__name__}")
    if len(data) > MAX_DG2_BYTES:
        raise DocumentError(f"DG2 of {len(data)} bytes exceeds {MAX_DG2_BYTES}")
    buf = bytes(data)
    tag, vs, ve = _tlv(buf, 0, len(buf))
    if tag != TAG_DG2:
        raise DocumentError(f"not a DG2: outer tag {tag:X}, expected 75")
    if ve != len(buf):
        raise DocumentError(f"{len(buf) - ve} bytes after the end of the DG2")
    kids = _children(buf, vs, ve, 1)
    if [k[0] for k in kids] != [TAG_BIGT]:
        raise DocumentError("DG2 must hold exactly one biometric information group template 7F61")
    group = _children(buf, kids[0][1], kids[0][2], 2)
    if not group or group[0][0] != TAG_COUNT:
        raise DocumentError("7F61 must start with the number of instances (tag 02)")
    count = _uint(buf, group[0][1], group[0][2], 2, "number of instances")
    bits = group[1:]
    if any(t != TAG_BIT for t, _, _ in bits):
        raise DocumentError("7F61 may hold only biometric information templates 7F60")
    if count != len(bits):
        raise DocumentError(f"7F61 announces {count} instances and holds {len(bits)}")
    if not 1 <= count <= MAX_IMAGES:
        raise DocumentError(f"{count} biometric instances (1..{MAX_IMAGES} accepted)")
    images: list[FaceImage] = []
    for i, (_, bs, be) in enumerate(bits):
        where = f"biometric information template {i}"
        inner = _children(buf, bs, be, 3)
        if any(t not in (TAG_BHT, TAG_BDB, TAG_BDB_CONSTRUCTED) for t, _, _ in inner):
            raise DocumentError(f"{where}: unexpected element (only A1 and 5F2E/7F2E allowed)")
        _check_header(buf, _one(inner, (TAG_BHT,), where), where, 4)
        t, ds, de = _one(inner, (TAG_BDB, TAG_BDB_CONSTRUCTED), where)
        if t == TAG_BDB_CONSTRUCTED:
            parts = _children(buf, ds, de, 4)
            if any(p[0] == 0x82 for p in parts):
                raise DocumentError(f"{where}: enciphered biometric data is not supported")
            _, ds, de = _one(parts, (0x81,), f"{where}, 7F2E")
        _read_facial_record(buf[ds:de], images, where)
    return images


def _check_header(buf: bytes, bht: _Element, where: str, depth: int) -> None:
    for tag, vs, ve in _children(buf, bht[1], bht[2], depth):
        if tag == 0x81 and _uint(buf, vs, ve, 3, "biometric type") != BIOMETRIC_TYPE_FACE:
            raise DocumentError(f"{where}: biometric type is not facial features (02)")
        if tag == 0x87 and _uint(buf, vs, ve, 2, "format owner") != FORMAT_OWNER_SC37:
            raise DocumentError(f"{where}: format owner {buf[vs:ve].hex()} is not ISO SC 37 (0101)")
        if tag == 0x88 and _uint(buf, vs, ve, 2, "format type") != FORMAT_TYPE_FACE:
            raise DocumentError(f"{where}: format type {buf[vs:ve].hex()} is not 19794-5 (0008)")


def _angle(v: int) -> int | None:
    return (v - 1) * 2 - 180 if 1 <= v <= 181 else None


def _read_facial_record(rec: bytes, out: list[FaceImage], where: str) -> None:
    if len(rec) < _GENERAL_HEADER:
        raise DocumentError(f"{where}: facial record of {len(rec)} bytes is truncated")
    if rec[:4] != FAC_MAGIC:
        raise DocumentError(f"{where}: not an ISO/IEC 19794-5 facial record (no 'FAC' header)")
    if rec[4:8] != FAC_VERSION_2005:
        raise DocumentError(f"{where}: facial record version {rec[4:8]!r} is not supported "
                            "(19794-5:2005, '010', only)")
    length, n = struct.unpack_from(">IH", rec, 8)
    if length != len(rec):
        raise DocumentError(f"{where}: record length {length} != {len(rec)} bytes of data")
    if n == 0 or len(out) + n > MAX_IMAGES:
        raise DocumentError(f"{where}: {n} facial images (1..{MAX_IMAGES} in all accepted)")
    pos = _GENERAL_HEADER
    for k in range(n):
        w = f"{where}, image {k}"
        if len(rec) - pos < _FACIAL_INFO:
            raise DocumentError(f"{w}: truncated facial information block")
        block, npts, gender, eye, hair = struct.unpack_from(">IHBBB", rec, pos)
        mask = int.from_bytes(rec[pos + 9:pos + 12], "big")
        (expression,) = struct.unpack_from(">H", rec, pos + 12)
        yaw, pitch, roll, uy, up, ur = rec[pos + 14:pos + 20]
        fixed = _FACIAL_INFO + _FEATURE_POINT * npts + _IMAGE_INFO
        if block > len(rec) - pos:
            raise DocumentError(f"{w}: block length {block} exceeds the {len(rec) - pos} "
                                "bytes left")
        if block < fixed:
            raise DocumentError(f"{w}: block length {block} is shorter than its headers and "
                                f"{npts} feature points ({fixed} bytes)")
        if block == fixed:
            raise DocumentError(f"{w}: no image data")
        end = pos + block
        p = pos + _FACIAL_INFO
        points = []
        for _ in range(npts):
            ftype, code, x, y, _reserved = struct.unpack_from(">BBHHH", rec, p)
            points.append((ftype, code >> 4, code & 0x0F, x, y))
            p += _FEATURE_POINT
        itype, dtype, width, height, cspace, source, device, quality = struct.unpack_from(
            ">BBHHBBHH", rec, p)
        if dtype not in _FORMATS:
            raise DocumentError(f"{w}: image data type {dtype} (0 JPEG, 1 JPEG 2000 supported)")
        out.append(FaceImage(
            data=rec[p + _IMAGE_INFO:end], format=_FORMATS[dtype], width=width, height=height,
            gender=gender, eye_colour=eye, hair_colour=hair, property_mask=mask,
            expression=expression, pose=(_angle(yaw), _angle(pitch), _angle(roll)),
            pose_uncertainty=(uy, up, ur), feature_points=tuple(points), image_type=itype,
            colour_space=cspace, source_type=source, device_type=device, quality=quality))
        pos = end
    if pos != len(rec):
        raise DocumentError(f"{where}: {len(rec) - pos} bytes after the last facial image")


# ---------------------------------------------------------------------------- DG2 writing
def _tlv_bytes(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
        n.to_bytes((n.bit_length() + 7) // 8, "big")
    return tag.to_bytes((tag.bit_length() + 7) // 8, "big") + length + value


def _as_face(item: Any) -> FaceImage:
    if isinstance(item, FaceImage):
        return item
    try:
        data, fmt, width, height = item
    except (TypeError, ValueError):
        raise InputError("images must be FaceImage or (bytes, format, width, height)") from None
    return FaceImage(data=bytes(data), format=fmt, width=width, height=height)


def _pose_code(angle: int | None) -> int:
    if angle is None:
        return 0
    if not -180 <= angle <= 180:
        raise InputError(f"pose angle {angle} outside -180..180 degrees")
    return round(angle / 2) + 91


def _facial_record(faces: Sequence[FaceImage]) -> bytes:
    blocks = []
    for f in faces:
        if f.format not in _FORMAT_CODES:
            raise InputError(f"format must be 'jpeg' or 'jpeg2000', got {f.format!r}")
        if not f.data:
            raise InputError("empty image data")
        points = b"".join(struct.pack(">BBHHH", t, (major << 4) | minor, x, y, 0)
                          for t, major, minor, x, y in f.feature_points)
        body = (struct.pack(">HBBB", len(f.feature_points), f.gender, f.eye_colour, f.hair_colour)
                + f.property_mask.to_bytes(3, "big") + struct.pack(">H", f.expression)
                + bytes(_pose_code(a) for a in f.pose) + bytes(f.pose_uncertainty) + points
                + struct.pack(">BBHHBBHH", f.image_type, _FORMAT_CODES[f.format], f.width,
                              f.height, f.colour_space, f.source_type, f.device_type, f.quality)
                + f.data)
        blocks.append(struct.pack(">I", 4 + len(body)) + body)
    payload = b"".join(blocks)
    return (FAC_MAGIC + FAC_VERSION_2005
            + struct.pack(">IH", _GENERAL_HEADER + len(payload), len(faces)) + payload)


def build_dg2(images: Sequence[FaceImage | tuple[bytes, str, int, int]], *,
              one_record: bool = False) -> bytes:
    """A DG2 holding ``images`` (FaceImage, or ``(bytes, "jpeg" | "jpeg2000", width, height)``).

    One biometric information template per image (what issuers write), or with
    ``one_record=True`` a single template whose 19794-5 record holds every image. The header
    template carries ICAO header version 0101, biometric type 02 (face), format owner 0101 and
    format type 0008.
    """
    faces = [_as_face(i) for i in images]
    if not 1 <= len(faces) <= MAX_IMAGES:
        raise InputError(f"a DG2 holds 1..{MAX_IMAGES} images, got {len(faces)}")
    bht = _tlv_bytes(TAG_BHT, _tlv_bytes(0x80, ICAO_HEADER_VERSION.to_bytes(2, "big"))
                     + _tlv_bytes(0x81, bytes([BIOMETRIC_TYPE_FACE]))
                     + _tlv_bytes(0x87, FORMAT_OWNER_SC37.to_bytes(2, "big"))
                     + _tlv_bytes(0x88, FORMAT_TYPE_FACE.to_bytes(2, "big")))
    groups = [faces] if one_record else [[f] for f in faces]
    bits = b"".join(_tlv_bytes(TAG_BIT, bht + _tlv_bytes(TAG_BDB, _facial_record(g)))
                    for g in groups)
    out = _tlv_bytes(TAG_DG2, _tlv_bytes(TAG_BIGT, _tlv_bytes(TAG_COUNT, bytes([len(groups)]))
                                         + bits))
    if len(out) > MAX_DG2_BYTES:
        raise InputError(f"DG2 of {len(out)} bytes exceeds {MAX_DG2_BYTES}")
    return out


# ---------------------------------------------------------------------------- verification
def verify_document(engine: Any, live_image: ImageLike, dg2_bytes: bytes, *,
                    fmr: float = 1e-3) -> Decision:
    """Is the live face the holder of the document? Compares ``live_image`` with the first facial
    image of the DG2 at the threshold calibrated for ``fmr`` (a calibrated point, else
    :class:`CalibrationError`).

    :class:`DocumentError`: malformed DG2 or an undecodable chip portrait; :class:`NoFaceError`:
    no face in the chip portrait or in the live image.
    """
    portrait = read_dg2(dg2_bytes)[0]
    try:
        frame = load_image(portrait.data, max_pixels=engine.max_pixels)
    except (ImageDecodeError, ImageTooLargeError) as exc:
        raise DocumentError(f"chip portrait ({portrait.format}) cannot be decoded: {exc}") from exc
    live, ref = engine.templates([live_image, frame], on_error="return")
    if isinstance(ref, NoFaceError):
        raise NoFaceError("no face found in the chip portrait")
    if isinstance(ref, MatcherError):
        raise ref
    if isinstance(live, NoFaceError):
        raise NoFaceError("no face found in the live image")
    if isinstance(live, MatcherError):
        raise live
    return engine.verify(live, ref, fmr=fmr)
