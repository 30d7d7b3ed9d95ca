"""Turn whatever the caller holds (path, encoded bytes, numpy array) into a BGR uint8 frame."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from matcher.errors import ImageDecodeError, ImageTooLargeError, InputError


class EncodedImage(NamedTuple):
    """Encoded bytes read from a file elsewhere (e.g. by a screening driver for a remote worker),
    with the file's name that decoding errors should quote."""

    name: str
    data: bytes


#: A path, encoded image bytes (JPEG, PNG, WebP, BMP, TIFF, JPEG 2000...), an
#: :class:`EncodedImage` or a uint8 array.
ImageLike = str | os.PathLike | bytes | bytearray | memoryview | EncodedImage | np.ndarray

#: Default pixel limit: 40 Mpx covers every camera and document scanner a gate meets, and bounds
#: one decoded frame to 120 MB; a 30000 x 30000 image (900 Mpx) is refused before decoding.
DEFAULT_MAX_PIXELS = 40_000_000

#: Largest encoded input read into memory (a 40 Mpx PNG is well below this).
MAX_ENCODED_BYTES = 256 * 1024 * 1024


def load_image(image: ImageLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``image`` as a C-contiguous ``(H, W, 3)`` uint8 array in **BGR** order.

    Arrays are taken as BGR (OpenCV's order); ``(H, W)`` and ``(H, W, 1)`` grayscale and
    ``(H, W, 4)`` BGRA are converted. Encoded bytes and files are decoded with OpenCV, with EXIF
    orientation applied; truncated or corrupt files are refused. Raises :class:`ImageDecodeError`, :class:`ImageTooLargeError` or
    :class:`InputError`.
    """
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    if isinstance(image, EncodedImage):
        return _decode(bytes(image.data), max_pixels, image.name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(bytes(image), max_pixels, "<bytes>")
    if isinstance(image, (str, os.PathLike)):
        return _decode(read_encoded(image), max_pixels, str(Path(image)))
    raise InputError(
        f"expected a path, encoded bytes or a uint8 numpy array, got {type(image).__name__}"
    )


def read_encoded(path: str | os.PathLike) -> bytes:
    """The bytes of an image file, refused (:class:`ImageTooLargeError`) above
    :data:`MAX_ENCODED_BYTES`; an unreadable file is an :class:`ImageDecodeError`."""
    from matcher.fileio import read_limited

    return read_limited(path, MAX_ENCODED_BYTES, too_large=ImageTooLargeError,
                        unreadable=ImageDecodeError)


def _check_size(h: int, w: int, max_pixels: int, what: str) -> None:
    if h < 1 or w < 1:
        raise InputError(f"{what}: empty image ({h}x{w})")
    if h * w > max_pixels:
        raise ImageTooLargeError(
            f"{what}: {w}x{h} = {h * w} pixels exceeds the limit of {max_pixels}"
        )


def _from_array(a: np.ndarray, max_pixels: int) -> np.ndarray:
    if a.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8, got {a.dtype} (scale and convert first)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        _check_size(a.shape[0], a.shape[1], max_pixels, "array")
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_GRAY2BGR)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputError(f"image arrays must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {a.shape}")
    _check_size(a.shape[0], a.shape[1], max_pixels, "array")
    if a.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(a)


def _decode(data: bytes, max_pixels: int, what: str) -> np.ndarray:
    """Decode with Pillow (which reports truncated and corrupt files) and OpenCV as fallback."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageDecodeError(f"{what}: no data (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return _decode_cv2(data, max_pixels, what)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{what}: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"{what}: corrupt image header: {exc}") from exc
    with im:
        _check_size(im.size[1], im.size[0], max_pixels, what)  # before any pixel is decoded
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode == "L":
                return cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2BGR)
            if im.mode != "RGB":
                im = im.convert("RGB")
            return cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
            raise ImageDecodeError(f"{what}: corrupt or truncated image: {exc}") from exc


def _decode_cv2(data: bytes, max_pixels: int, what: str) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(f"{what}: cannot decode image: {exc}") from exc
    if img is None:
        raise ImageDecodeError(f"{what}: not a decodable image")
    _check_size(img.shape[0], img.shape[1], max_pixels, what)
    return np.ascontiguousarray(img)
