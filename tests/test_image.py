"""Image input: every accepted form, and a typed error for everything else."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from matcher.errors import ImageDecodeError, ImageTooLargeError, InputError, MatcherError
from matcher.image import load_image


def _jpeg(h=40, w=60) -> bytes:
    img = np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_accepted_forms_give_bgr_uint8(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 200  # red in BGR
    out = load_image(bgr)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, bgr)
    gray = np.full((4, 5), 77, np.uint8)
    np.testing.assert_array_equal(load_image(gray), np.full((4, 5, 3), 77, np.uint8))
    np.testing.assert_array_equal(load_image(gray[:, :, None]), np.full((4, 5, 3), 77, np.uint8))
    bgra = np.dstack([bgr, np.full((4, 5), 255, np.uint8)])
    np.testing.assert_array_equal(load_image(bgra), bgr)
    np.testing.assert_array_equal(load_image(bgr[:, ::-1]), bgr[:, ::-1])  # strided view ok
    png = cv2.imencode(".png", bgr)[1].tobytes()
    np.testing.assert_array_equal(load_image(png), bgr)
    np.testing.assert_array_equal(load_image(bytearray(png)), bgr)
    f = tmp_path / "x.png"
    f.write_bytes(png)
    np.testing.assert_array_equal(load_image(f), bgr)
    np.testing.assert_array_equal(load_image(str(f)), bgr)
    assert load_image(_jpeg()).shape == (40, 60, 3)


@pytest.mark.parametrize("bad, error", [
    (b"", ImageDecodeError),
    (b"\xff\xd8\xff\xe0 not really a jpeg", ImageDecodeError),
    (np.random.default_rng(0).bytes(5000), ImageDecodeError),
    (np.zeros((0, 0, 3), np.uint8), InputError),
    (np.zeros((3, 3, 3), np.float64), InputError),
    (np.zeros((1, 3, 3, 3), np.uint8), InputError),
    (np.zeros((3, 3, 2), np.uint8), InputError),
    (12345, InputError),
    (None, InputError),
])
def test_bad_input_is_a_typed_error(bad, error):
    with pytest.raises(error):
        load_image(bad)


def test_truncated_jpeg_is_refused():
    data = _jpeg(200, 200)
    for cut in (len(data) // 3, len(data) - 40):
        with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
            load_image(data[:cut])


def test_huge_images_are_refused_before_decoding():
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(30000, 30000))
    huge = np.broadcast_to(np.zeros(1, np.uint8), (30000, 30000, 3))  # no memory behind it
    with pytest.raises(ImageTooLargeError):
        load_image(huge)
    assert load_image(np.zeros((10, 10, 3), np.uint8), max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((10, 11, 3), np.uint8), max_pixels=100)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageDecodeError):
        load_image(tmp_path)
    assert issubclass(ImageDecodeError, MatcherError)
