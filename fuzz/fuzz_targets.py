#!/usr/bin/env python3
"""Fuzzing of matcher's untrusted-input entry points.

Usage::

    python fuzz/fuzz_targets.py                         # every target, 100,000 inputs each
    python fuzz/fuzz_targets.py --target gallery --count 20000 --seed 7
    python fuzz/fuzz_targets.py --target native_nms --start 4711 --count 1   # replay one input
    python fuzz/fuzz_targets.py --list

Every input is derived from ``(seed, target, index)`` alone, so any failure is reproduced by
``--seed S --target T --start I --count 1``. Inputs are mutations of real, valid seeds
(templates, sealed blobs and QR text, saved galleries plain and encrypted, JPEG/PNG, DG2) --
raw byte mutations, and structure-aware ones that re-compute the CRC / SHA-256 / BLAKE2 digest
or re-encrypt with the right key so the mutation reaches the parser behind the integrity check --
plus random arrays (shapes, dtypes, strides, values including NaN/inf) for ``load_image`` and
the native kernels in ``matcher._native``.

An input passes when the entry point returns a sane result (finite, right shape / dtype) or
raises a typed error: :class:`~matcher.errors.MatcherError` for the Python API, ``TypeError`` /
``ValueError`` for ``matcher._native``. Anything else is a failure: another exception type, a
NaN in a result, a crash (the worker dies: the supervisor reports the input and carries on after
it) or a hang (each input runs under a ``faulthandler`` watchdog, ``--time-cap`` seconds, which
kills the worker even inside native code).

The supervisor runs each target in a worker subprocess; the worker publishes the index of the
input it is running in a small shared file, so a crash or hang is attributed exactly.
Exit status: 0 when every input passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------------- mutations
INTERESTING8 = [0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x40, 0x0F, 0xFE]
INTERESTING32 = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE]


def mutate(rng: random.Random, data: bytes, others: list[bytes] | None = None,
           max_ops: int = 8) -> bytes:
    """A few random byte-level edits of ``data`` (bit flips, interesting values, chunk
    insert / delete / duplicate / splice, truncation)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(12)
        n = len(b)
        if n == 0:
            b += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
            continue
        i = rng.randrange(n)
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.getrandbits(8)
        elif op == 2:
            b[i] = rng.choice(INTERESTING8)
        elif op in (3, 4):  # interesting 16 / 32-bit value, either endianness
            v = rng.choice(INTERESTING32 + [n, n - i, rng.getrandbits(32)])
            size = 2 if op == 3 else 4
            raw = (v & ((1 << (8 * size)) - 1)).to_bytes(size, rng.choice(("little", "big")))
            b[i:i + size] = raw
        elif op == 5:
            del b[i:i + rng.randint(1, max(1, min(64, n - i)))]
        elif op == 6:
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 32)))
        elif op == 7:
            j = rng.randrange(n)
            b[i:i] = b[j:j + rng.randint(1, 64)]
        elif op == 8:
            del b[rng.randrange(n + 1):]
        elif op == 9 and others:
            o = rng.choice(others)
            if o:
                j = rng.randrange(len(o))
                b[i:i + rng.randint(0, 64)] = o[j:j + rng.randint(1, 256)]
        elif op == 10:
            j = rng.randrange(n)
            k = rng.randint(1, 16)
            b[i:i + k], b[j:j + k] = b[j:j + k], b[i:i + k]
        else:
            b[i:i + 1] = bytes([rng.choice(INTERESTING8)]) * rng.randint(1, 64)
    return bytes(b)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    c = rng.randrange(12 if depth < 3 else 8)
    if c == 0:
        return None
    if c == 1:
        return rng.choice([True, False])
    if c == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63), 10**30, rng.randint(-5, 5)])
    if c == 3:
        return rng.choice([0.5, -1.0, 1e308, float("inf"), float("-inf"), float("nan"), 1e-320])
    if c == 4:
        return rng.choice(["", "x", "A" * 200, "2024-01-01T00:00:00+00:00", "not a date",
                           "\u0000", "\ud800x", "flat", "hnsw", "ivf", "IVF4,Flat", "auto"])
    if c == 5:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(0, 20)))
    if c == 6:
        return rng.randint(-3, 50)
    if c == 7:
        return "9999-12-31T23:59:59" if rng.random() < 0.5 else "0001-01-01"
    if c in (8, 9):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["id", "template_ids", "metadata", "x", ""]): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def mutate_json(rng: random.Random, obj: Any) -> Any:
    """Replace one random node of a JSON tree (in place where possible); returns the root."""
    if rng.random() < 0.03:
        return random_json(rng)
    path: list[Any] = []
    node = obj
    while isinstance(node, (dict, list)) and node and (not path or rng.random() < 0.8):
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    if not path:
        return random_json(rng)
    parent, key = path[-1]
    r = rng.random()
    if r < 0.1 and isinstance(parent, dict):
        del parent[key]
    elif r < 0.15 and isinstance(parent, list):
        parent.append(parent[key])  # duplicates (e.g. a subject twice)
    else:
        parent[key] = random_json(rng)
    return obj


def random_dtype(rng: random.Random) -> np.dtype:
    return np.dtype(rng.choice(["u1", "i1", "f4", "f8", "<f4", ">f4", ">f8", "f2", "i4", "i8",
                                "u2", "?", "c8", "O", "V4", "U2", "f4,f4", "M8[s]"]))


def random_values(rng: random.Random, nrng: np.random.Generator, shape: tuple[int, ...],
                  dtype: np.dtype, finite: bool = False) -> np.ndarray:
    size = int(np.prod(shape)) if shape else 1
    kind = rng.randrange(6)
    if dtype.kind == "f":
        if kind == 0:
            a = nrng.standard_normal(size)
        elif kind == 1:
            a = nrng.uniform(-1e4, 1e4, size)
        elif kind == 2:
            a = nrng.choice([0.0, 1.0, -1.0, 0.5, 1e-40, 3e38, -3e38, 1e300], size)
        elif kind == 3:
            a = nrng.uniform(0, 255, size)
        else:
            a = nrng.standard_normal(size) * 10 ** rng.randint(-3, 6)
        if not finite and rng.random() < 0.3 and size:
            a[nrng.integers(0, size, max(1, size // 10))] = rng.choice([np.nan, np.inf, -np.inf])
        with np.errstate(over="ignore", invalid="ignore"):
            return a.astype(dtype).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return nrng.integers(info.min, int(info.max) + 1, size, dtype=dtype).reshape(shape)
    if dtype.kind == "b":
        return (nrng.random(size) < 0.5).reshape(shape)
    try:
        return np.zeros(shape, dtype)
    except (TypeError, ValueError):
        return np.zeros(shape, np.float32)


def restride(rng: random.Random, a: np.ndarray) -> np.ndarray:
    """The same values with other strides: a non-contiguous view, Fortran order, a transpose,
    a read-only or misaligned copy, or a 0-stride broadcast."""
    r = rng.randrange(8)
    if r == 0 and a.ndim:
        big = np.repeat(a, 2, axis=rng.randrange(a.ndim)) if a.size else a
        ax = rng.randrange(a.ndim)
        sl = [slice(None)] * a.ndim
        sl[ax] = slice(None, None, 2)
        v = big[tuple(sl)]
        return v if v.shape == a.shape else a
    if r == 1:
        return np.asfortranarray(a)
    if r == 2 and a.ndim >= 2:
        return a.T
    if r == 3:
        b = a.copy()
        b.flags.writeable = False
        return b
    if r == 4 and a.dtype.itemsize > 1 and a.dtype.kind in "fiu":  # misaligned
        raw = np.zeros(a.nbytes + 1, np.uint8)
        b = raw[1:].view(a.dtype).reshape(a.shape) if a.size else a
        if a.size:
            b[...] = a
        return b
    if r == 5 and a.ndim and a.size:
        return np.broadcast_to(a[(slice(0, 1),) + (slice(None),) * (a.ndim - 1)], a.shape)
    return a


# --------------------------------------------------------------------------------------- seeds
class Seeds:
    """Valid inputs built once per worker (deterministic, independent of the fuzz seed)."""

    def __init__(self) -> None:
        import cv2

        from matcher import icao, sealing
        from matcher.gallery import Gallery
        from matcher.types import Template

        r = np.random.default_rng(12345)
        self.key = bytes(range(32))
        self.other_key = bytes(range(1, 33))
        mh = "0123456789abcdef"

        def unit(n: int, d: int) -> np.ndarray:
            v = r.standard_normal((n, d)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        self.templates = [Template(unit(1, d)[0], model=m, model_hash=mh)
                          for d, m in ((128, "sface-2021dec"), (4, "m"), (512, "x" * 64))]
        self.template_bytes = [t.to_bytes(e) for t in self.templates for e in ("f32", "f16", "int8")]
        exp = datetime(2100, 1, 1, tzinfo=timezone.utc)
        self.sealed = [sealing.seal(t, self.key, expires_at=exp, issuer=iss, encoding=e)
                       for t in self.templates[:2] for iss in ("", "AIRLINE-ÄÖ")
                       for e in ("int8", "f16")]
        self.sealed_text = [sealing.TEXT_PREFIX + __import__("matcher.base45").base45.encode(b)
                            for b in self.sealed]
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

        galleries = []
        for n, per, kind in ((5, 1, "flat"), (12, 2, "flat"), (3, 1, "hnsw"), (0, 1, "flat")):
            g = Gallery("sface-2021dec", mh, kind=kind, dim=16)
            for i in range(n):
                g.enroll(f"S{i:03d}", unit(per, 16), metadata={"flight": "CX880", "i": i},
                         expires_at=exp if i % 2 else None)
            galleries.append(g)
        self.gallery_plain = [g.to_bytes() for g in galleries]
        self.gallery_enc = [g.to_bytes(self.key) for g in galleries]

        from skimage import data as skdata  # test dependency; a real face
        face = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])
        small = cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA)
        self.images = [cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes(),
                       cv2.imencode(".png", small)[1].tobytes(),
                       cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))[1].tobytes(),
                       cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
                       cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_BGR2BGRA))[1].tobytes()]
        jp = self.images[0]
        self.dg2 = [icao.build_dg2([(jp, "jpeg", 48, 48)]),
                    icao.build_dg2([(jp, "jpeg", 48, 48), (self.images[3], "jpeg", 48, 48)]),
                    icao.build_dg2([(jp, "jpeg", 48, 48)] * 3, one_record=True),
                    icao.build_dg2([icao.FaceImage(data=jp, format="jpeg", width=48, height=48,
                                                   feature_points=((1, 12, 1, 10, 20),) * 3,
                                                   pose=(0, -10, 180))])]


_SEEDS: Seeds | None = None


def seeds() -> Seeds:
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = Seeds()
    return _SEEDS


# ------------------------------------------------------------------------------------- targets
class Bad(Exception):
    """An input broke the contract (wrong error type, NaN, malformed result)."""


def _finite(name: str, a: Any) -> None:
    a = np.asarray(a)
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        raise Bad(f"{name} has NaN or infinity")


def _check_template(t: Any) -> None:
    from matcher.types import Template

    if not isinstance(t, Template):
        raise Bad(f"returned {type(t).__name__}, not a Template")
    v = np.asarray(t.vector)
    _finite("template vector", v)
    if abs(float(np.linalg.norm(v.astype(np.float64))) - 1.0) > 1e-3:
        raise Bad("template vector is not unit length")


def t_template(rng: random.Random, nrng: np.random.Generator) -> None:
    from matcher.types import Template

    s = seeds()
    data = mutate(rng, rng.choice(s.template_bytes), s.template_bytes)
    if rng.random() < 0.6 and len(data) >= 4:  # re-compute the CRC: reach the field checks
        data = data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))
    _check_template(Template.from_bytes(data))


def t_unseal(rng: random.Random, nrng: np.random.Generator) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from matcher import sealing

    s = seeds()
    blob = rng.choice(s.sealed)
    r = rng.random()
    if r < 0.4:
        blob = mutate(rng, blob, s.sealed)
    else:
        # Structure-aware: mutate the header and / or the plaintext, then re-encrypt with the
        # right key so the mutation reaches the checks behind authentication.
        h = sealing._parse(blob)
        pt = AESGCM(s.key).decrypt(h.nonce, h.ciphertext, h.aad)
        aad = h.aad
        if r < 0.7:
            pt = mutate(rng, pt, s.template_bytes)
            if rng.random() < 0.7 and len(pt) >= 4:
                pt = pt[:-4] + struct.pack("<I", zlib.crc32(pt[:-4]))
        if r >= 0.6:
            aad = mutate(rng, aad, [a.aad for a in map(sealing._parse, s.sealed)], max_ops=3)
        nonce = aad[7:19] if len(aad) >= 19 else h.nonce
        blob = aad + AESGCM(s.key).encrypt(nonce, pt, aad)
    key = s.key if rng.random() < 0.9 else s.other_key
    now = rng.choice([None, s.now, datetime(2200, 1, 1, tzinfo=timezone.utc),
                      datetime(1970, 1, 1, tzinfo=timezone.utc)])
    _check_template(sealing.unseal(blob, key, now=now))
    if rng.random() < 0.2:
        sealing.inspect_sealed(blob)


B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def t_unseal_text(rng: random.Random, nrng: np.random.Generator) -> None:
    from matcher import sealing

    s = seeds()
    text = list(rng.choice(s.sealed_text))
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        i = rng.randrange(len(text) + 1)
        if op == 0 and text:
            text[min(i, len(text) - 1)] = rng.choice(B45)
        elif op == 1:
            text.insert(i, rng.choice(B45 + "\u00e9\x00 \n\t:MS1"))
        elif op == 2 and text:
            del text[i:i + rng.randint(1, 3)]
        elif op == 3:
            del text[i:]
        elif op == 4 and text:
            text[min(i, len(text) - 1)] = chr(rng.randrange(0x110000) if rng.random() < 0.5
                                              else rng.randrange(128))
        else:
            text = list(rng.choice(["", "MS1:", "MS2:", " ", "ms1:"])) + text[4:]
    out = "".join(text)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        pass  # lone surrogates: still a str the caller might pass
    _check_template(sealing.unseal_text(out, s.key, now=s.now))


def _gallery_bytes(rng: random.Random, encrypted: bool) -> bytes:
    from matcher import gallery_file
    from matcher.index import _DIGEST

    s = seeds()
    pool = s.gallery_enc if encrypted else s.gallery_plain
    data = rng.choice(pool)
    r = rng.random()
    if r < 0.3:  # raw mutation (mostly stopped by the checksum / tag)
        data = mutate(rng, data, pool)
        if not encrypted and rng.random() < 0.5 and len(data) > 32:
            data = data[:-32] + hashlib.sha256(data[:-32]).digest()
        return data
    # Structure-aware: mutate the metadata JSON and / or the index bytes, then repack with
    # valid digests (and the right key), so the mutation reaches Gallery.from_bytes' checks.
    meta, index = gallery_file.unpack(data, s.key)
    if r < 0.75:
        for _ in range(rng.randint(1, 3)):
            meta = mutate_json(rng, meta)
    if r >= 0.6 or rng.random() < 0.2:
        index = mutate(rng, index, max_ops=4)
        if rng.random() < 0.8 and len(index) > _DIGEST:
            body = index[:-_DIGEST]
            index = body + hashlib.blake2b(body, digest_size=_DIGEST).digest()
    if rng.random() < 0.02:  # hostile nesting: built as text (json.dumps would recurse too)
        depth = rng.choice([100, 5000, 100_000])
        js = b'{"model":"m","subjects":' + b"[" * depth + b"]" * depth + b"}"
        return _pack_raw(js, index, s.key if encrypted else None)
    try:
        return gallery_file.pack(meta, index, s.key if encrypted else None)
    except (ValueError, TypeError):
        return gallery_file.pack({"model": "x"}, index, s.key if encrypted else None)


def _pack_raw(js: bytes, index: bytes, key: bytes | None) -> bytes:
    """gallery_file.pack with the metadata JSON given as bytes."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from matcher import gallery_file as gf

    body = struct.pack("<I", len(js)) + js + index
    if key is None:
        data = gf._FIXED.pack(gf.MAGIC, gf.VERSION, 0) + gf._LEN.pack(len(body)) + body
    else:
        nonce = os.urandom(12)
        header = gf._FIXED.pack(gf.MAGIC, gf.VERSION, 1) + gf._key_id(key) + nonce + \
            gf._LEN.pack(len(body) + 16)
        data = header + AESGCM(key).encrypt(nonce, body, header)
    return data + hashlib.sha256(data).digest()


def _use_gallery(g: Any, rng: random.Random, nrng: np.random.Generator) -> None:
    g.info()
    ids = g.subject_ids()
    if g.template_count and g._index is not None:
        q = nrng.standard_normal(g._index._dim).astype(np.float32)
        q /= np.linalg.norm(q)
        try:
            from matcher.types import Template
            t = Template(q, model=g.model, model_hash=g.model_hash or "0123456789abcdef")
        except Exception:  # noqa: BLE001  (a corrupt model id / hash: nothing to search with)
            return
        r = g.identify(t, k=rng.randint(1, 5), fpir=None, threshold=0.5)
        for c in r.candidates:
            if not np.isfinite(c.score) or not -1.0001 <= c.score <= 1.0001:
                raise Bad(f"identify score {c.score!r}")
            if c.subject_id not in ids:
                raise Bad(f"candidate {c.subject_id!r} is not an enrolled subject")
    if ids and rng.random() < 0.5:
        g.remove(rng.choice(ids))
        g.to_bytes()


def _gallery_target(encrypted: bool) -> Callable[[random.Random, np.random.Generator], None]:
    def run(rng: random.Random, nrng: np.random.Generator) -> None:
        from matcher.gallery import Gallery

        s = seeds()
        data = _gallery_bytes(rng, encrypted)
        key = s.key if (encrypted or rng.random() < 0.1) else None
        if encrypted and rng.random() < 0.05:
            key = rng.choice([None, s.other_key])
        try:
            g = Gallery.from_bytes(data, key=key,
                                   require_encryption=encrypted and rng.random() < 0.5)
        except MemoryError as e:
            raise Bad(f"memory bomb: {e!r}") from None
        except Exception as e:
            if "(MemoryError)" in str(e):  # index.py turns FAISS' bad_alloc into InputError
                raise Bad(f"memory bomb (allocation beyond the worker's address-space limit): "
                          f"{e}") from None
            raise
        _use_gallery(g, rng, nrng)
    return run


def _check_image(img: Any) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
            and img.shape[2] == 3 and img.flags.c_contiguous and img.shape[0] >= 1
            and img.shape[1] >= 1):
        raise Bad(f"load_image returned {type(img).__name__} "
                  f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}")


def t_image_bytes(rng: random.Random, nrng: np.random.Generator) -> None:
    from matcher.image import load_image

    s = seeds()
    data = mutate(rng, rng.choice(s.images), s.images)
    wrap = rng.choice([bytes, bytearray, memoryview])
    _check_image(load_image(wrap(data), max_pixels=rng.choice([40_000_000, 4000, 100])))


def t_image_array(rng: random.Random, nrng: np.random.Generator) -> None:
    from matcher.image import load_image

    ndim = rng.choice([0, 1, 2, 2, 3, 3, 3, 4])
    shape = tuple(rng.choice([0, 1, 2, 3, 4, 5, 17, 64]) for _ in range(ndim))
    if ndim == 3 and rng.random() < 0.6:
        shape = shape[:2] + (rng.choice([1, 3, 4]),)
    dtype = np.dtype("u1") if rng.random() < 0.6 else random_dtype(rng)
    a = restride(rng, random_values(rng, nrng, shape, dtype))
    if rng.random() < 0.05:
        a = rng.choice([[1, 2, 3], None, 3.5, "/nonexistent/file.jpg", b"", object()])
    _check_image(load_image(a, max_pixels=rng.choice([40_000_000, 100, 1])))


def t_dg2(rng: random.Random, nrng: np.random.Generator) -> None:
    from matcher.icao import read_dg2
    from matcher.image import load_image

    s = seeds()
    data = mutate(rng, rng.choice(s.dg2), s.dg2 + s.images)
    faces = read_dg2(data)
    if not 1 <= len(faces) <= 16:
        raise Bad(f"read_dg2 returned {len(faces)} faces")
    if rng.random() < 0.3:
        _check_image(load_image(faces[0].data))


# Native kernels ------------------------------------------------------------------------------
def _arr(rng: random.Random, nrng: np.random.Generator, shape: tuple[int, ...], dtype: str,
         finite: bool = False) -> np.ndarray:
    """Usually a valid array of ``shape`` / ``dtype``; sometimes a wrong dtype, shape, layout or
    a non-array."""
    r = rng.random()
    if r < 0.06:
        dt = random_dtype(rng)
    else:
        dt = np.dtype(dtype)
    if rng.random() < 0.08:
        shape = tuple(rng.choice([0, 1, 2, 3, 5]) for _ in range(rng.choice([0, 1, 2, 3, 4, 5])))
    elif rng.random() < 0.08:
        shape = tuple(max(0, d + rng.choice([-1, 1, 0])) for d in shape)
    a = random_values(rng, nrng, shape, dt, finite=finite)
    if rng.random() < 0.12:
        a = restride(rng, a)
    if rng.random() < 0.02:
        return rng.choice([None, 3, [1.0, 2.0], "x", a.tolist() if a.size < 50 else 1])
    return a


def _native_no_nan(name: str, inputs: list[Any], out: Any) -> None:
    """A NaN / infinity in a result is a defect only when every float input was finite and of
    moderate size (|x| < 1e6: no overflow is possible in these kernels)."""
    for x in inputs:
        if isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.size:
            with np.errstate(invalid="ignore"):
                if not np.all(np.isfinite(x)) or np.max(np.abs(x)) >= 1e6:
                    return
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        _finite(f"{name} result", o)


def t_native_similarity_transform(rng, nrng):
    from matcher import _native

    n = rng.choice([0, 1, 2, 3, 5, 68])
    src = _arr(rng, nrng, (n, 2), rng.choice(["f4", "f8"]))
    dst = _arr(rng, nrng, (n, 2), rng.choice(["f4", "f8"]))
    if isinstance(src, np.ndarray) and rng.random() < 0.1 and src.size:
        src = np.ascontiguousarray(src)
        src[:] = src[0]  # coincident points
    m = _native.similarity_transform(src, dst)
    if m.shape != (2, 3) or m.dtype != np.float64:
        raise Bad(f"similarity_transform returned {m.shape} {m.dtype}")
    _finite("similarity_transform result", m)


def t_native_warp_faces(rng, nrng):
    from matcher import _native

    h, w = rng.choice([1, 2, 7, 40]), rng.choice([1, 2, 9, 40])
    img = _arr(rng, nrng, (h, w, 3), "u1")
    b = rng.choice([0, 1, 2, 3])
    tr = _arr(rng, nrng, (b, 2, 3), "f8")
    if isinstance(tr, np.ndarray) and tr.dtype == np.float64 and tr.ndim == 3 and tr.shape[1:] == (2, 3) \
            and rng.random() < 0.6:
        for i in range(tr.shape[0]):  # plausible maps, sometimes singular or huge
            s, a = rng.choice([1.0, 0.5, 3.0, 1e-7, 1e9, 0.0]), rng.uniform(-3.2, 3.2)
            tr[i] = [[s * np.cos(a), -s * np.sin(a), rng.uniform(-100, 100)],
                     [s * np.sin(a), s * np.cos(a), rng.uniform(-100, 100)]]
    n = rng.choice([0, 1, 2, 4])
    oh, ow = rng.choice([1, 3, 16, 112]), rng.choice([1, 3, 16, 112])
    out = _arr(rng, nrng, (n, 3, oh, ow), "f4") if rng.random() < 0.3 else np.zeros((n, 3, oh, ow), np.float32)
    offset = rng.choice([0, 0, 1, 2, -1, 2**40])
    _native.warp_faces(img, tr, out, offset, rng.random() < 0.5)
    # Success: every written face is finite and within 0..255 (bilinear of uint8 values).
    faces = out[offset:offset + tr.shape[0]]
    _finite("warp_faces faces", faces)
    if faces.size and (faces.min() < 0 or faces.max() > 255):
        raise Bad(f"warp_faces values outside 0..255: {faces.min()} .. {faces.max()}")


def t_native_letterbox(rng, nrng):
    from matcher import _native

    h, w = rng.choice([1, 2, 31, 64]), rng.choice([1, 3, 33, 64])
    img = _arr(rng, nrng, (h, w, 3), "u1")
    oh, ow = rng.choice([1, 32, 64, 96]), rng.choice([1, 32, 64, 96])
    out = _arr(rng, nrng, (1, 3, oh, ow), "f4", finite=True)
    scale = rng.choice([1.0, 0.5, 0.33, 1.5, 0.0, -1.0, 64.0, 65.0, float("nan"), float("inf"),
                        1e-300, rng.uniform(0.01, 3.0)])
    _native.letterbox(img, out, scale)
    _native_no_nan("letterbox", [out], out)


def t_native_nms(rng, nrng):
    from matcher import _native

    n = rng.choice([0, 1, 2, 5, 50, 300])
    boxes = _arr(rng, nrng, (n, 4), "f4")
    scores = _arr(rng, nrng, (n,), "f4")
    iou = rng.choice([0.3, 0.0, 1.0, -0.1, 1.1, float("nan"), rng.random()])
    max_out = rng.choice([0, 1, 5, 64, 10**6, -1])
    keep = _native.nms(boxes, scores, iou, max_out)
    n = len(boxes)  # _arr may have changed the requested shape; the call accepted this one
    if keep.dtype != np.int64 or keep.ndim != 1 or len(keep) > max(max_out, 0):
        raise Bad(f"nms returned {keep.shape} {keep.dtype}")
    if len(keep) and (keep.min() < 0 or keep.max() >= n or len(set(keep.tolist())) != len(keep)):
        raise Bad(f"nms returned out-of-range or repeated indices {keep[:10]}")


def t_native_dot_batch(rng, nrng):
    from matcher import _native

    n, q, d = rng.choice([0, 1, 3, 17, 100]), rng.choice([0, 1, 2, 5]), rng.choice([1, 3, 16, 128, 129])
    g = _arr(rng, nrng, (n, d), "f4")
    qq = _arr(rng, nrng, (q, d), "f4")
    out = _native.dot_batch(g, qq)
    if out.shape != (qq.shape[0], g.shape[0]) or out.dtype != np.float32:
        raise Bad(f"dot_batch returned {out.shape}")
    _native_no_nan("dot_batch", [g, qq], out)
    if out.size and np.all(np.isfinite(out)) and np.max(np.abs(g)) < 1e6 and np.max(np.abs(qq)) < 1e6:
        ref = qq.astype(np.float64) @ g.astype(np.float64).T
        tol = 1e-4 * (1 + np.abs(qq).astype(np.float64) @ np.abs(g).astype(np.float64).T)
        if np.any(np.abs(out - ref) > tol):
            raise Bad("dot_batch differs from the float64 reference")


def t_native_topk_ip(rng, nrng):
    from matcher import _native

    n, q, d = rng.choice([0, 1, 3, 17, 300]), rng.choice([0, 1, 2, 5]), rng.choice([1, 3, 16, 128])
    g = _arr(rng, nrng, (n, d), "f4")
    qq = _arr(rng, nrng, (q, d), "f4")
    k = rng.choice([1, 2, 5, 1000, 0, -3, 2**62])
    scores, rows = _native.topk_ip(g, qq, k)
    kk = min(k, g.shape[0])
    if scores.shape != (qq.shape[0], kk) or rows.shape != scores.shape:
        raise Bad(f"topk_ip returned {scores.shape} {rows.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= g.shape[0]):
        raise Bad("topk_ip returned out-of-range rows")
    _native_no_nan("topk_ip", [g, qq], scores)


def t_native_quantize_int8(rng, nrng):
    from matcher import _native

    x = _arr(rng, nrng, (rng.choice([0, 1, 4, 33]), rng.choice([1, 7, 128])), "f4")
    codes, scale = _native.quantize_int8(x)
    if codes.shape != x.shape or codes.dtype != np.int8 or scale.shape != (x.shape[0],):
        raise Bad("quantize_int8 result shape")
    if codes.size and codes.min() < -127:
        raise Bad("quantize_int8 produced -128")
    _finite("quantize_int8 scale", scale)


def t_native_dot_int8(rng, nrng):
    from matcher import _native

    n, d = rng.choice([0, 1, 5, 64]), rng.choice([1, 7, 128])
    gq = _arr(rng, nrng, (n, d), "i1")
    gs = _arr(rng, nrng, (n,), "f4")
    q = _arr(rng, nrng, (d,), "f4")
    out = _native.dot_int8(gq, gs, q)
    if out.shape != (gq.shape[0],) or out.dtype != np.float32:
        raise Bad("dot_int8 result shape")
    _native_no_nan("dot_int8", [gs, q], out)


def t_native_crop_stats(rng, nrng):
    from matcher import _native

    n, h, w = rng.choice([0, 1, 3]), rng.choice([2, 3, 8, 112]), rng.choice([2, 3, 8, 112])
    batch = _arr(rng, nrng, (n, 3, h, w), "f4")
    offset = rng.choice([0, 1, -1, 5])
    count = rng.choice([-1, 0, 1, 2, -2, 10])
    roi = rng.choice([None, None, (0, 0, w, h), (1, 1, max(2, w - 1), max(2, h - 1)),
                      (0, 0, 0, 0), (-1, 0, w, h), (0, 0, w + 1, h), [0, 0, 2, 2], (0.0, 0, 1, 1),
                      "abcd", (True, 0, 1, 1), (0, 0, 2**70, 1)])
    out = _native.crop_stats(batch, offset, count, roi, rng.random() < 0.5)
    _native_no_nan("crop_stats", [batch], out)


TARGETS: dict[str, tuple[Callable, tuple[type, ...]]] = {}


def _register() -> None:
    from matcher.errors import MatcherError

    api = (MatcherError,)
    native = (TypeError, ValueError)
    TARGETS.update({
        "template": (t_template, api),
        "unseal": (t_unseal, api),
        "unseal_text": (t_unseal_text, api),
        "gallery": (_gallery_target(False), api),
        "gallery_enc": (_gallery_target(True), api),
        "image_bytes": (t_image_bytes, api),
        "image_array": (t_image_array, api),
        "dg2": (t_dg2, api),
    })
    from matcher import _native
    for name in ("similarity_transform", "warp_faces", "letterbox", "nms", "dot_batch", "topk_ip",
                 "quantize_int8", "dot_int8", "crop_stats"):
        if hasattr(_native, name):
            TARGETS[f"native_{name}"] = (globals()[f"t_native_{name}"], native)


def target_names() -> list[str]:
    if not TARGETS:
        _register()
    return list(TARGETS)


def input_rng(seed: int, target: str, index: int) -> tuple[random.Random, np.random.Generator]:
    rng = random.Random(f"{seed}/{target}/{index}")
    return rng, np.random.default_rng(rng.getrandbits(64))


def run_one(target: str, seed: int, index: int) -> str | None:
    """Run one input; ``None`` if it passed, else a description of the failure."""
    if not TARGETS:
        _register()
    fn, allowed = TARGETS[target]
    rng, nrng = input_rng(seed, target, index)
    try:
        fn(rng, nrng)
    except allowed:
        return None
    except Bad as e:
        return f"contract: {e}"
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        where = "; ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in tb)
        return f"untyped {type(e).__name__}: {str(e)[:200]} [{where}]"
    return None


# -------------------------------------------------------------------------------------- worker
def worker(target: str, seed: int, start: int, count: int, state_path: str, time_cap: float,
           failures_path: str, max_memory_gb: float = 0) -> None:
    import faulthandler
    import warnings

    warnings.simplefilter("ignore")  # Pillow / numpy warnings about odd inputs are not failures
    faulthandler.enable()
    if max_memory_gb > 0:  # a shared machine: a memory bomb fails fast instead of swapping
        import resource
        lim = int(max_memory_gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    seeds()
    target_names()
    fd = os.open(state_path, os.O_RDWR)
    mm = mmap.mmap(fd, 16)
    with open(failures_path, "a", buffering=1) as fails:
        for i in range(start, start + count):
            mm[:8] = struct.pack("<q", i)
            faulthandler.dump_traceback_later(time_cap, exit=True)
            problem = run_one(target, seed, i)
            faulthandler.cancel_dump_traceback_later()
            if problem:
                fails.write(json.dumps({"target": target, "seed": seed, "index": i,
                                        "problem": problem}) + "\n")
        mm[:8] = struct.pack("<q", start + count)
        mm[8:16] = struct.pack("<q", 1)  # finished


def supervise(target: str, seed: int, start: int, count: int, time_cap: float,
              quiet: bool = False, max_memory_gb: float = 6.0) -> dict[str, Any]:
    """Run ``count`` inputs of ``target`` in worker processes; a crash or hang is recorded
    with its input index and the run continues after it."""
    failures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="matcher-fuzz-") as tmp:
        state = os.path.join(tmp, "state")
        fails = os.path.join(tmp, "failures.jsonl")
        open(fails, "w").close()
        pos, end = start, start + count
        t0 = time.perf_counter()
        while pos < end:
            with open(state, "wb") as f:
                f.write(struct.pack("<qq", pos, 0))
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", "--target", target,
                 "--seed", str(seed), "--start", str(pos), "--count", str(end - pos),
                 "--time-cap", str(time_cap), "--state", state, "--failures", fails,
                 "--max-memory-gb", str(max_memory_gb)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
            with open(state, "rb") as f:
                at, done = struct.unpack("<qq", f.read(16))
            if done and proc.returncode == 0:
                break
            kind = "hang" if "Timeout (" in proc.stderr else f"crash (exit {proc.returncode})"
            failures.append({"target": target, "seed": seed, "index": at, "problem": kind,
                             "stderr": proc.stderr[-2000:]})
            if not quiet:
                print(f"  {target}: {kind} at input {at}", flush=True)
            pos = at + 1
        elapsed = time.perf_counter() - t0
        with open(fails) as f:
            failures += [json.loads(line) for line in f if line.strip()]
    return {"target": target, "seed": seed, "inputs": count, "seconds": round(elapsed, 1),
            "rate_per_s": round(count / elapsed, 1) if elapsed else None, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", help="target name (repeatable; default: all)")
    p.add_argument("--count", type=int, default=100_000, help="inputs per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first input index")
    p.add_argument("--time-cap", type=float, default=5.0,
                   help="seconds one input may take before it counts as a hang")
    p.add_argument("--max-memory-gb", type=float, default=6.0,
                   help="address-space limit of a worker (0: none); an input that allocates "
                        "beyond it is reported as a memory bomb")
    p.add_argument("--json", help="write the summary to this file")
    p.add_argument("--list", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    p.add_argument("--failures", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    names = target_names()
    if a.list:
        print("\n".join(names))
        return 0
    if a.worker:
        worker(a.target[0], a.seed, a.start, a.count, a.state, a.time_cap, a.failures,
               a.max_memory_gb)
        return 0
    chosen = a.target or names
    unknown = [t for t in chosen if t not in names]
    if unknown:
        p.error(f"unknown target(s) {unknown}; --list shows them")
    results = []
    for t in chosen:
        r = supervise(t, a.seed, a.start, a.count, a.time_cap, max_memory_gb=a.max_memory_gb)
        results.append(r)
        print(f"{t:32s} {r['inputs']:>8d} inputs  {r['seconds']:>8.1f} s  "
              f"{r['rate_per_s']:>8.1f}/s  failures: {len(r['failures'])}", flush=True)
        for f in r["failures"][:5]:
            print(f"    #{f['index']}: {f['problem'][:300]}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
