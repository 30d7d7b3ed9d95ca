"""ICAO 9303 DG2 (e-passport chip portrait): parsing, refusing bad input, verification, CLI."""

from __future__ import annotations

import io
import json
import struct
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from matcher.cli_icao import verify_doc
from matcher.errors import DocumentError, InputError, MatcherError, NoFaceError
from matcher.icao import MAX_DG2_BYTES, MAX_IMAGES, FaceImage, build_dg2, read_dg2, verify_document


# ------------------------------------------------------------------------------- helpers
def _encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=kw.get("quality", 80))
    elif fmt == "jpeg2000":  # a chip-like lossy JPEG 2000 (JP2 box format, or a raw codestream)
        im.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[kw.get("ratio", 15)],
                irreversible=True, no_jp2=kw.get("codestream", False))
    return buf.getvalue()


def _portrait(bgr: np.ndarray) -> np.ndarray:
    """A passport-style RGB portrait of the astronaut: head and shoulders, resized (a different
    capture from the live frame, which is the whole 512 x 512 picture)."""
    crop = bgr[10:290, 110:330, ::-1]
    return np.ascontiguousarray(cv2.resize(crop, (176, 224), interpolation=cv2.INTER_AREA))


def _quick(fn, *args) -> Exception:
    t = time.perf_counter()
    with pytest.raises(DocumentError) as info:
        fn(*args)
    assert time.perf_counter() - t < 0.1
    return info.value


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    ln = bytes([n]) if n < 128 else bytes([0x84]) + n.to_bytes(4, "big")
    return tag.to_bytes((tag.bit_length() + 7) // 8, "big") + ln + value


#: Small stand-in image bytes: read_dg2 does not decode, so structure tests need no real image.
FAKE = b"\xff\xd8\xff\xe0" + bytes(range(40)) + b"\xff\xd9"


@pytest.fixture(scope="module")
def portrait(astronaut_bgr) -> np.ndarray:
    return _portrait(astronaut_bgr)


@pytest.fixture(scope="module")
def chip_images(portrait) -> dict[str, bytes]:
    return {"jpeg": _encode(portrait, "jpeg"), "jpeg2000": _encode(portrait, "jpeg2000"),
            "j2k": _encode(portrait, "jpeg2000", codestream=True)}


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["jpeg", "jpeg2000", "j2k"])
def test_one_real_image_round_trips(chip_images, portrait, kind):
    data = chip_images[kind]
    fmt = "jpeg" if kind == "jpeg" else "jpeg2000"
    h, w = portrait.shape[:2]
    faces = read_dg2(build_dg2([(data, fmt, w, h)]))
    assert len(faces) == 1
    f = faces[0]
    assert f.data == data and f.format == fmt and (f.width, f.height) == (w, h)
    assert f.pose == (None, None, None) and f.feature_points == () and f.image_type == 1


@pytest.mark.parametrize("one_record", [False, True])
def test_several_images_keep_bytes_and_header_fields(chip_images, one_record):
    full = FaceImage(chip_images["jpeg2000"], "jpeg2000", 176, 224, gender=2, eye_colour=3,
                     hair_colour=4, property_mask=0x000003, expression=1, pose=(10, -4, 180),
                     pose_uncertainty=(5, 6, 7),
                     feature_points=((1, 12, 1, 100, 120), (1, 3, 9, 65535, 0)), image_type=2,
                     colour_space=1, source_type=2, device_type=0x1234, quality=77)
    images = [full, (chip_images["jpeg"], "jpeg", 176, 224), FaceImage(FAKE, "jpeg", 1, 2,
                                                                       pose=(-180, 0, None))]
    faces = read_dg2(build_dg2(images, one_record=one_record))
    assert faces[0] == full
    assert faces[1] == FaceImage(chip_images["jpeg"], "jpeg", 176, 224)
    assert faces[2].pose == (-180, 0, None) and faces[2].data == FAKE


def test_lfw_faces_round_trip(lfw_dir):
    files = sorted((lfw_dir / "images").glob("*/*.jpg"))[:3]
    images = []
    for f in files:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        images += [(f.read_bytes(), "jpeg", rgb.shape[1], rgb.shape[0]),
                   (_encode(rgb, "jpeg2000", ratio=10), "jpeg2000", rgb.shape[1], rgb.shape[0])]
    faces = read_dg2(build_dg2(images))
    assert [(f.data, f.format, f.width, f.height) for f in faces] == images


def test_layout_is_the_published_one():
    dg2 = build_dg2([(FAKE, "jpeg", 3, 4)])
    # 75 / 7F61 / 02 01 01 / 7F60 / A1 {80 0101, 81 02, 87 0101, 88 0008} / 5F2E FAC record
    assert dg2[:1] == b"\x75" and dg2[2:4] == b"\x7f\x61" and dg2[5:8] == b"\x02\x01\x01"
    assert dg2[8:10] == b"\x7f\x60"
    bht = b"\xa1\x0f\x80\x02\x01\x01\x81\x01\x02\x87\x02\x01\x01\x88\x02\x00\x08"
    assert dg2[11:11 + len(bht)] == bht
    rec = dg2[11 + len(bht) + 3:]
    assert dg2[11 + len(bht):11 + len(bht) + 2] == b"\x5f\x2e"
    assert rec[:8] == b"FAC\x00010\x00"
    length, n = struct.unpack(">IH", rec[8:14])
    assert length == len(rec) == 14 + 20 + 12 + len(FAKE) and n == 1
    block, = struct.unpack(">I", rec[14:18])
    assert block == 20 + 12 + len(FAKE)
    assert rec[-len(FAKE):] == FAKE


def test_long_form_lengths_and_constructed_data_block():
    big = FAKE * 100  # > 255 bytes: multi-byte lengths everywhere
    dg2 = build_dg2([(big, "jpeg", 3, 4)])
    assert read_dg2(dg2)[0].data == big
    # The same record in a constructed 7F2E block (plain data in 81), 4-byte length forms.
    rec = build_dg2([(FAKE, "jpeg", 3, 4)])
    fac = rec[rec.index(b"FAC\x00"):]
    bht = _tlv(0xA1, _tlv(0x87, b"\x01\x01") + _tlv(0x88, b"\x00\x08"))
    bit = _tlv(0x7F60, bht + _tlv(0x7F2E, _tlv(0x81, fac)))
    assert read_dg2(_tlv(0x75, _tlv(0x7F61, b"\x02\x01\x01" + bit)))[0].data == FAKE
    enciphered = _tlv(0x7F60, bht + _tlv(0x7F2E, _tlv(0x82, fac)))
    assert "enciphered" in str(_quick(read_dg2, _tlv(0x75, _tlv(0x7F61, b"\x02\x01\x01"
                                                               + enciphered))))


def test_builder_refuses_bad_arguments():
    for bad in ([], [(FAKE, "png", 1, 1)], [(b"", "jpeg", 1, 1)], [FAKE],
                [(FAKE, "jpeg", 1, 1)] * (MAX_IMAGES + 1),
                [FaceImage(FAKE, "jpeg", 1, 1, pose=(200, 0, 0))]):
        with pytest.raises(InputError):
            build_dg2(bad)


# ------------------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def small_dg2() -> bytes:
    return build_dg2([FaceImage(FAKE, "jpeg", 3, 4, feature_points=((1, 2, 3, 4, 5),)),
                      (FAKE[:20], "jpeg2000", 5, 6)])


def test_every_truncation_is_refused(small_dg2):
    for n in range(len(small_dg2)):
        _quick(read_dg2, small_dg2[:n])


@pytest.mark.parametrize("tail", [b"\x00", b"\x75\x00", b"garbage" * 100])
def test_trailing_bytes_are_refused(small_dg2, tail):
    assert "after the end" in str(_quick(read_dg2, small_dg2 + tail))


def _replace(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert old in blob
    return blob.replace(old, new, 1)


def test_wrong_tags_and_formats_are_refused(small_dg2):
    b = small_dg2
    for bad in (b"\x76" + b[1:],                                   # not DG2
                _replace(b, b"\x7f\x61", b"\x7f\x62"),             # no group template
                _replace(b, b"\x7f\x60", b"\x7f\x6f"),             # no information template
                _replace(b, b"\x5f\x2e", b"\x5f\x2f"),             # no data block
                _replace(b, b"\xa1\x0f", b"\xa2\x0f"),             # no header template
                _replace(b, b"\x81\x01\x02", b"\x81\x01\x08"),     # iris, not face
                _replace(b, b"\x88\x02\x00\x08", b"\x88\x02\x00\x07"),  # not 19794-5
                _replace(b, b"FAC\x00", b"FIR\x00"),               # finger record
                _replace(b, b"010\x00", b"030\x00"),               # 19794-5:2011
                _replace(b, b"\x02\x01\x02", b"\x02\x01\x03"),     # count says 3, holds 2
                _replace(b, b"\x02\x01\x02", b"\x04\x01\x02")):    # no count
        _quick(read_dg2, bad)
    with pytest.raises(DocumentError):
        read_dg2("75")  # type: ignore[arg-type]
    _quick(read_dg2, b"")
    _quick(read_dg2, b"\x75" + b"\x84" + (MAX_DG2_BYTES).to_bytes(4, "big") + bytes(MAX_DG2_BYTES))


def _record(blob: bytes) -> tuple[int, int]:
    """Offset of the first FAC record and its length field."""
    i = blob.index(b"FAC\x00")
    return i, struct.unpack(">I", blob[i + 8:i + 12])[0]


def test_lying_lengths_are_refused(small_dg2):
    b = small_dg2
    i, rec_len = _record(b)
    h = 2 if b[1] < 0x80 else 2 + (b[1] & 0x7F)  # end of the outer tag and length
    lies = [
        b[:1] + b"\x84\xff\xff\xff\xff" + b[h:],                         # outer length 4 GiB
        b[:1] + b"\x85\x00\x00\x00\x00\x10" + b[h:],                     # 5-byte length form
        b[:1] + b"\x80" + b[h:] + b"\x00\x00",                           # indefinite length
        b[:i + 8] + struct.pack(">I", rec_len + 1) + b[i + 12:],         # record length
        b[:i + 8] + struct.pack(">I", rec_len - 1) + b[i + 12:],
        b[:i + 12] + b"\xff\xff" + b[i + 14:],                           # 65535 images
        b[:i + 12] + b"\x00\x00" + b[i + 14:],                           # no image
        b[:i + 14] + b"\xff\xff\xff\xff" + b[i + 18:],                   # facial block length
        b[:i + 14] + b"\x00\x00\x00\x10" + b[i + 18:],                   # shorter than headers
        b[:i + 18] + b"\xff\xff" + b[i + 20:],                           # 65535 feature points
        b[:i + 8] + b"\x00\x00\x00\x00" + b[i + 12:],
    ]
    j = i + 14 + 20 + 8  # image information of the first image: data type byte at +1
    lies.append(b[:j + 1] + b"\x07" + b[j + 2:])                         # image data type 7
    for bad in lies:
        _quick(read_dg2, bad)


def test_deep_nesting_and_huge_element_counts_are_refused():
    deep = b"\x00"
    for _ in range(2000):
        deep = _tlv(0x75, deep)
    _quick(read_dg2, deep)
    deep = b"\x00"
    for _ in range(2000):
        deep = _tlv(0x7F61, deep)
    _quick(read_dg2, _tlv(0x75, deep))
    many = _tlv(0x75, _tlv(0x7F61, b"\x02\x01\x10" + b"\x7f\x60\x00" * 200_000))
    _quick(read_dg2, many)
    _quick(read_dg2, _tlv(0x75, _tlv(0x7F61, b"\x02\x01\x11" + b"\x7f\x60\x00" * 17)))
    _quick(read_dg2, b"\x7f\xff\xff\xff\x01\x00")  # 5-byte tag


@st.composite
def _mutated(draw, blobs):
    blob = bytearray(draw(st.sampled_from(blobs)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "extend"]))
        pos = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF]))
        elif op == "truncate":
            del blob[pos:]
        elif op == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del blob[pos:pos + draw(st.integers(1, 8))]
        else:
            blob += draw(st.binary(min_size=1, max_size=16))
    return bytes(blob)


_BLOBS = [build_dg2([(FAKE, "jpeg", 3, 4)]),
          build_dg2([FaceImage(FAKE, "jpeg2000", 3, 4, pose=(0, 2, -2),
                               feature_points=((1, 2, 3, 4, 5),)), (FAKE, "jpeg", 1, 1)]),
          build_dg2([(FAKE, "jpeg", 3, 4), (FAKE * 4, "jpeg", 5, 6)], one_record=True)]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(_BLOBS))
def test_mutated_blobs_parse_or_raise_document_error(blob):
    try:
        faces = read_dg2(blob)
    except DocumentError:
        return
    assert 1 <= len(faces) <= MAX_IMAGES
    assert all(isinstance(f, FaceImage) and f.data for f in faces)


# ------------------------------------------------------------------------------- verification
@pytest.mark.parametrize("kind", ["jpeg", "jpeg2000", "j2k"])
def test_verify_document_matches_the_same_person(engine, astronaut_bgr, chip_images, kind):
    fmt = "jpeg" if kind == "jpeg" else "jpeg2000"
    d = verify_document(engine, astronaut_bgr, build_dg2([(chip_images[kind], fmt, 176, 224)]))
    assert d.match and d.fmr == 1e-3 and d.threshold == engine.operating_points[1e-3]
    assert d.score > d.threshold


def test_verify_document_rejects_another_person(engine, chip_images):
    skdata = pytest.importorskip("skimage.data")
    d = verify_document(engine, skdata.camera(), build_dg2([(chip_images["jpeg"], "jpeg", 176,
                                                             224)]))
    assert not d.match


def test_verify_document_errors(engine, astronaut_bgr, chip_images):
    blank = _encode(np.full((224, 176, 3), 128, np.uint8), "jpeg")
    with pytest.raises(NoFaceError, match="chip portrait"):
        verify_document(engine, astronaut_bgr, build_dg2([(blank, "jpeg", 176, 224)]))
    dg2 = build_dg2([(chip_images["jpeg"], "jpeg", 176, 224)])
    with pytest.raises(NoFaceError, match="live image"):
        verify_document(engine, np.full((240, 320, 3), 128, np.uint8), dg2)
    with pytest.raises(DocumentError):
        verify_document(engine, astronaut_bgr, dg2[:-1])
    with pytest.raises(DocumentError, match="cannot be decoded"):
        verify_document(engine, astronaut_bgr, build_dg2([(FAKE, "jpeg", 3, 4)]))
    with pytest.raises(MatcherError):  # not a calibrated operating point
        verify_document(engine, astronaut_bgr, dg2, fmr=0.5)


# ------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, astronaut_bgr, chip_images):
    d = tmp_path_factory.mktemp("icao")
    cv2.imwrite(str(d / "live.jpg"), astronaut_bgr)
    skdata = pytest.importorskip("skimage.data")
    cv2.imwrite(str(d / "other.png"), skdata.camera())
    dg2 = build_dg2([(chip_images["jpeg2000"], "jpeg2000", 176, 224)])
    (d / "dg2.bin").write_bytes(dg2)
    (d / "bad.bin").write_bytes(dg2[:-3])
    return d


def test_cli_exit_codes(cli_files):
    d = cli_files
    r = CliRunner().invoke(verify_doc, [str(d / "live.jpg"), str(d / "dg2.bin"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("MATCH")
    r = CliRunner().invoke(verify_doc, [str(d / "live.jpg"), str(d / "dg2.bin"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["match"] is True
    r = CliRunner().invoke(verify_doc, [str(d / "other.png"), str(d / "dg2.bin"), "--fmr", "1e-3"])
    assert r.exit_code == 1 and r.stdout.startswith("NO MATCH")
    r = CliRunner().invoke(verify_doc, [str(d / "live.jpg"), str(d / "bad.bin")])
    assert r.exit_code == 2 and "DocumentError" in r.stderr and r.stdout == ""
    r = CliRunner().invoke(verify_doc, [str(d / "live.jpg"), str(d / "missing.bin")])
    assert r.exit_code == 2 and "missing.bin" in r.stderr
