"""Limits that bound memory and time: each is a clear typed error, fast, never a MemoryError,
an allocation proportional to a header's claim, or a hang."""

from __future__ import annotations

import struct
import time
import zlib
from datetime import datetime, timezone

import numpy as np
import pytest

from matcher import errors, gallery_file, icao, image
from matcher.gallery import MAX_K, MAX_METADATA_BYTES, MAX_TEMPLATES_PER_SUBJECT, Gallery
from matcher.template_format import MAX_DIM
from matcher.types import Template

MH = "0123456789abcdef"


def _png_header(w: int, h: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def _fast(fn, *args, budget: float = 2.0, **kw):
    t0 = time.perf_counter()
    try:
        return fn(*args, **kw)
    finally:
        assert time.perf_counter() - t0 < budget, "limit took too long to enforce"


@pytest.mark.parametrize("w,h", [(30000, 30000), (65535, 65535), (2**31 - 1, 2)])
def test_image_pixel_limit_before_decoding(w: int, h: int) -> None:
    with pytest.raises(errors.ImageTooLargeError):
        _fast(image.load_image, _png_header(w, h))


def test_image_pixel_limit_arrays_and_custom_limit() -> None:
    big = np.broadcast_to(np.zeros(3, np.uint8), (8000, 6000, 3))  # 48 Mpx, no memory used
    with pytest.raises(errors.ImageTooLargeError):
        _fast(image.load_image, big)
    with pytest.raises(errors.ImageTooLargeError):
        image.load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=399)
    assert image.load_image(np.zeros((20, 20, 3), np.uint8), max_pixels=400).shape == (20, 20, 3)


def test_encoded_file_size_limit(tmp_path, monkeypatch) -> None:
    p = tmp_path / "big.png"
    p.write_bytes(_png_header(10, 10) + b"\0" * 2048)
    monkeypatch.setattr(image, "MAX_ENCODED_BYTES", 1024)
    with pytest.raises(errors.ImageTooLargeError):
        image.load_image(p)


def test_dg2_size_and_count_limits() -> None:
    with pytest.raises(errors.DocumentError):
        _fast(icao.read_dg2, b"\x75\x84" + struct.pack(">I", icao.MAX_DG2_BYTES)
              + bytes(icao.MAX_DG2_BYTES))
    # A length field claiming 4 GB on a 10-byte input: refused without allocating.
    with pytest.raises(errors.DocumentError):
        _fast(icao.read_dg2, b"\x75\x84\xff\xff\xff\xff\x7f\x61\x00\x00")
    jpeg = b"\xff\xd8" + bytes(100) + b"\xff\xd9"
    with pytest.raises(errors.InputError):
        icao.build_dg2([(jpeg, "jpeg", 8, 8)] * (icao.MAX_IMAGES + 1))
    dg2 = icao.build_dg2([(jpeg, "jpeg", 8, 8)] * icao.MAX_IMAGES)
    assert len(icao.read_dg2(dg2)) == icao.MAX_IMAGES
    # 17 instances announced and present: refused.
    many = dg2.replace(b"\x02\x01\x10", b"\x02\x01\x11", 1)
    with pytest.raises(errors.DocumentError):
        icao.read_dg2(many)


def test_gallery_file_size_limit(tmp_path, monkeypatch) -> None:
    g = Gallery("sface-2021dec", MH, kind="flat", dim=8)
    g.enroll("A", np.eye(8, dtype=np.float32)[:1])
    path = tmp_path / "g.gallery"
    g.save(path)
    monkeypatch.setattr(gallery_file, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(errors.GalleryFileError, match="exceeds"):
        Gallery.load(path)


def test_gallery_header_length_claims_do_not_allocate() -> None:
    g = Gallery("sface-2021dec", MH, kind="flat", dim=8)
    g.enroll("A", np.eye(8, dtype=np.float32)[:1])
    data = bytearray(g.to_bytes())
    data[6:14] = struct.pack("<Q", 2**63)  # body length
    with pytest.raises(errors.GalleryFileError):
        _fast(Gallery.from_bytes, bytes(data))


def test_gallery_request_limits() -> None:
    g = Gallery("sface-2021dec", MH, kind="flat", dim=8)
    v = np.eye(8, dtype=np.float32)
    g.enroll("A", v[:1])
    t = Template(v[0], model="sface-2021dec", model_hash=MH)
    with pytest.raises(errors.InputError):
        g.identify(t, k=MAX_K + 1, fpir=None, threshold=0.5)
    with pytest.raises(errors.InputError):
        g.enroll("A", np.repeat(v[:1], MAX_TEMPLATES_PER_SUBJECT + 1, axis=0))
    with pytest.raises(errors.InputError):
        g.enroll("B", v[:1], metadata={"x": "y" * MAX_METADATA_BYTES})


def test_template_dim_limit() -> None:
    with pytest.raises(errors.TemplateFormatError):
        Template.from_bytes(b"MT\x01\x00" + struct.pack("<H", MAX_DIM + 1) + b"\x01m" + bytes(20))


def test_sealed_expiry_beyond_datetime_range_is_not_an_overflow() -> None:
    """A u64 expiry beyond timedelta's range once raised OverflowError in unseal."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from matcher import sealing
    key = bytes(32)
    t = Template(np.eye(8, dtype=np.float32)[0], model="m", model_hash=MH)
    blob = sealing.seal(t, key, expires_at=datetime(2100, 1, 1, tzinfo=timezone.utc))
    h = sealing._parse(blob)
    aad = bytearray(h.aad)
    aad[19:27] = struct.pack("<Q", 2**64 - 1)
    pt = AESGCM(key).decrypt(h.nonce, h.ciphertext, h.aad)
    forged = bytes(aad) + AESGCM(key).encrypt(h.nonce, pt, bytes(aad))
    assert sealing.unseal(forged, key).model == "m"  # far future: not expired, no overflow


def test_engine_limits_are_validated_and_bound_faces(engine, astronaut_bgr) -> None:
    import matcher
    with pytest.raises(errors.InputError):
        matcher.Engine(max_faces=0)
    with pytest.raises(errors.InputError):
        matcher.Engine(batch_size=0)
    face = astronaut_bgr[:256, 96:352]
    tiled = np.ascontiguousarray(np.vstack([np.hstack([face, face])] * 2))  # 4 faces
    assert len(engine.detect(tiled)) >= 2
    one = matcher.Engine(max_faces=1)
    assert len(one.detect(tiled)) == 1
    with pytest.raises(errors.ImageTooLargeError):
        matcher.Engine(max_pixels=1000).detect(tiled)


def test_forged_faiss_length_is_refused_without_a_large_allocation():
    """A FAISS blob claiming 12 GB of vectors is tried in a memory-capped child first."""
    import faiss

    from matcher.errors import InputError
    from matcher.index import _trial_load

    idx = faiss.IndexFlatIP(4)
    idx.add(np.ones((10, 4), np.float32))
    good = faiss.serialize_index(idx).tobytes()
    assert struct.unpack_from("<Q", good, 37) == (40,)  # IndexFlat: header, then len(xb)
    forged = bytearray(good)
    struct.pack_into("<Q", forged, 37, 3 << 30)  # 3 G floats = 12 GB
    t = time.monotonic()
    with pytest.raises(InputError, match="does not load"):
        _trial_load(np.frombuffer(bytes(forged), np.uint8))
    assert time.monotonic() - t < 10
    _trial_load(np.frombuffer(good, np.uint8))  # a real index passes
