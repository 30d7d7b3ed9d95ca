"""Tests of the native core (matcher._native) against plain numpy / Python references.

Bilinear references here are exact float64 math. OpenCV's warpAffine / resize use fixed-point
interpolation weights (5 and 11 bits), so against OpenCV only a loose bound is asserted, on
smooth images where the coordinate quantisation cannot move a value by more than ~1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher import _native

FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
BAD_INPUT = (TypeError, ValueError)


# ------------------------------------------------------------------------------------------------
# References


def inverse_affine(m: np.ndarray) -> np.ndarray:
    full = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_ref(img: np.ndarray, m: np.ndarray, oh: int, ow: int, swap_rb: bool = True) -> np.ndarray:
    """cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0) semantics with exact float64 weights."""
    h, w = img.shape[:2]
    a = inverse_affine(m)
    ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
    with np.errstate(all="ignore"):
        sx = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
        sy = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
        sx = np.nan_to_num(np.clip(sx, -4.0, w + 4.0), nan=-4.0)
        sy = np.nan_to_num(np.clip(sy, -4.0, h + 4.0), nan=-4.0)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((oh, ow, 3), np.float64)
    src = img.astype(np.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            xx, yy = x0 + dx, y0 + dy
            wt = (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy)
            ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
            xi = np.clip(xx, 0, w - 1).astype(np.int64)
            yi = np.clip(yy, 0, h - 1).astype(np.int64)
            out += (wt * ok)[..., None] * src[yi, xi]
    if swap_rb:
        out = out[..., ::-1]
    return out.transpose(2, 0, 1)


def axis_ref(n_out: int, n_in: int, scale: float):
    s = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
    k = np.floor(s)
    f = s - k
    f[k < 0] = 0.0
    k[k < 0] = 0.0
    hi = k >= n_in - 1
    f[hi] = 0.0
    k[hi] = n_in - 1
    k = k.astype(np.int64)
    return k, np.minimum(k + 1, n_in - 1), f


def letterbox_ref(img: np.ndarray, oh: int, ow: int, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    nh, nw = round(h * scale), round(w * scale)
    out = np.zeros((1, 3, oh, ow), np.float64)
    if nh == 0 or nw == 0:
        return out
    src = img.astype(np.float64)
    y0, y1, fy = axis_ref(nh, h, scale)
    x0, x1, fx = axis_ref(nw, w, scale)
    rows0 = src[y0][:, x0] + fx[None, :, None] * (src[y0][:, x1] - src[y0][:, x0])
    rows1 = src[y1][:, x0] + fx[None, :, None] * (src[y1][:, x1] - src[y1][:, x0])
    res = rows0 + fy[:, None, None] * (rows1 - rows0)
    out[0, :, :nh, :nw] = res.transpose(2, 0, 1)
    return out


def nms_ref(boxes: np.ndarray, scores: np.ndarray, thr: float, max_out: int) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    kept_boxes: list[tuple[float, float, float, float, float]] = []
    for i in order:
        if len(kept) >= max_out:
            break
        x, y, w, h = (float(v) for v in boxes[i])
        keep = True
        if w > 0 and h > 0:
            x2, y2, area = x + w, y + h, w * h
            for kx1, ky1, kx2, ky2, ka in kept_boxes:
                iw = min(x2, kx2) - max(x, kx1)
                ih = min(y2, ky2) - max(y, ky1)
                if iw <= 0 or ih <= 0:
                    continue
                inter = iw * ih
                union = area + ka - inter
                if (inter / union if union > 0 else 0.0) > thr:
                    keep = False
                    break
            if keep:
                kept_boxes.append((x, y, x2, y2, area))
        if keep:
            kept.append(i)
    return kept


def umeyama_ref(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Umeyama (1991) via SVD, with the reflection correction."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = len(src)
    ms, md = src.mean(0), dst.mean(0)
    sc, dc = src - ms, dst - md
    cov = dc.T @ sc / n
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[1, 1] = -1
    r = u @ s @ vt
    c = np.trace(np.diag(d) @ s) / (sc**2).sum(1).mean()
    t = md - c * r @ ms
    return np.hstack([c * r, t[:, None]])


def quantize_ref(x: np.ndarray):
    s = np.abs(x).max(axis=1) / np.float32(127)
    scale = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def dot_tol(absdot: np.ndarray) -> np.ndarray:
    return 1e-5 * absdot + 1e-30


def topk_ref(scores: np.ndarray, k: int):
    """Per row of scores (Q, N): the min(k, N) best (score descending, ties by lower index, NaN
    last then by index), as (scores, indices)."""
    nq, n = scores.shape
    kk = min(k, n)
    idx = np.empty((nq, kk), np.int64)
    for qi in range(nq):
        s = scores[qi]
        nan = np.isnan(s)
        # lexsort: last key is primary.
        idx[qi] = np.lexsort((np.arange(n), -np.where(nan, 0, s), nan))[:kk]
    return np.take_along_axis(scores, idx, axis=1), idx


def random_similarity(rng, img_hw, out_hw=(112, 112), inside=True) -> np.ndarray:
    h, w = img_hw
    oh, ow = out_hw
    theta = rng.uniform(-np.pi, np.pi)
    s = rng.uniform(0.3, 3.0)
    if inside:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    else:
        cx, cy = rng.uniform(-w, 2 * w), rng.uniform(-h, 2 * h)
    c, sn = s * np.cos(theta), s * np.sin(theta)
    # Maps source (cx, cy) to the output centre.
    tx = ow / 2 - (c * cx - sn * cy)
    ty = oh / 2 - (sn * cx + c * cy)
    return np.array([[c, -sn, tx], [sn, c, ty]])


def smooth_image(rng, h, w) -> np.ndarray:
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 4.0)


# ------------------------------------------------------------------------------------------------
# similarity_transform

ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]]
)


def test_similarity_recovers_exact_transform():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = random_similarity(rng, (480, 640))
        src = rng.uniform(0, 500, (5, 2))
        dst = src @ m[:, :2].T + m[:, 2]
        got = _native.similarity_transform(src, dst)
        assert got.dtype == np.float64 and got.shape == (2, 3)
        np.testing.assert_allclose(got, m, rtol=1e-9, atol=1e-7)


def test_similarity_matches_umeyama_svd():
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 17):
        for _ in range(10):
            src = rng.uniform(-100, 400, (n, 2))
            dst = rng.uniform(0, 112, (n, 2))
            np.testing.assert_allclose(
                _native.similarity_transform(src, dst), umeyama_ref(src, dst), rtol=1e-8, atol=1e-8
            )
    src = ARCFACE_112 * 2.3 + [100, 80] + rng.normal(0, 2, (5, 2))
    np.testing.assert_allclose(
        _native.similarity_transform(src, ARCFACE_112), umeyama_ref(src, ARCFACE_112), atol=1e-9
    )


def test_similarity_never_reflects():
    src = ARCFACE_112.copy()
    dst = ARCFACE_112 * [-1.0, 1.0]  # mirror image: best fit has no reflection
    m = _native.similarity_transform(src, dst)
    assert np.linalg.det(m[:, :2]) >= 0
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])
    np.testing.assert_allclose(m, umeyama_ref(src, dst), atol=1e-9)


def test_similarity_accepts_float32_and_strided_points():
    src = np.ascontiguousarray(ARCFACE_112 * 1.7 + 20)
    ref = _native.similarity_transform(src, ARCFACE_112)
    big = np.zeros((5, 4), np.float64)
    big[:, ::2] = src
    np.testing.assert_allclose(_native.similarity_transform(big[:, ::2], ARCFACE_112), ref)
    np.testing.assert_allclose(
        _native.similarity_transform(src.astype(np.float32), ARCFACE_112.astype(np.float32)),
        ref,
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "src, dst, exc",
    [
        (ARCFACE_112.tolist(), ARCFACE_112, TypeError),
        (ARCFACE_112.astype(np.int64), ARCFACE_112, TypeError),
        (ARCFACE_112.astype(np.float16), ARCFACE_112, TypeError),
        (ARCFACE_112[:, :1], ARCFACE_112[:, :1], ValueError),
        (ARCFACE_112.ravel(), ARCFACE_112.ravel(), ValueError),
        (ARCFACE_112[:4], ARCFACE_112, ValueError),
        (ARCFACE_112[:1], ARCFACE_112[:1], ValueError),
        (np.full((5, 2), 3.0), ARCFACE_112, ValueError),
        (np.where(np.eye(5, 2) > 0, np.nan, ARCFACE_112), ARCFACE_112, ValueError),
        (ARCFACE_112, np.where(np.eye(5, 2) > 0, np.inf, ARCFACE_112), ValueError),
    ],
)
def test_similarity_rejects(src, dst, exc):
    with pytest.raises(exc):
        _native.similarity_transform(src, dst)


# ------------------------------------------------------------------------------------------------
# warp_faces


def run_warp(img, ms, oh=112, ow=112, swap_rb=True):
    out = np.full((len(ms), 3, oh, ow), -7.0, np.float32)
    _native.warp_faces(img, np.asarray(ms, np.float64).reshape(-1, 2, 3), out, 0, swap_rb)
    return out


def test_warp_matches_numpy_reference():
    rng = np.random.default_rng(2)
    cases = [(240, 320), (97, 61), (1, 1), (1, 7), (9, 1), (2, 2), (3, 500)]
    for h, w in cases:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ms = [random_similarity(rng, (h, w), inside=bool(k % 2)) for k in range(6)]
        # Small transforms that keep most samples near the image (including its border).
        ms.append(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.25]]))
        ms.append(np.array([[w / 112.0 * 1.1, 0.2, -3.0], [0.1, h / 112.0, 1.5]]))
        ms.append(np.array([[0.9, 0.3, 10.0], [-0.2, 1.2, -4.0]]))  # general affine
        for swap in (True, False):
            out = run_warp(img, ms, swap_rb=swap)
            for b, m in enumerate(ms):
                ref = warp_ref(img, m, 112, 112, swap)
                np.testing.assert_allclose(out[b], ref, rtol=0, atol=1e-3)


def test_warp_output_sizes_and_offset():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    ms = np.stack([random_similarity(rng, (50, 70), (9, 13)) for _ in range(2)])
    out = np.full((5, 3, 9, 13), -7.0, np.float32)
    _native.warp_faces(img, ms, out, offset=2)
    assert np.all(out[:2] == -7.0) and np.all(out[4:] == -7.0)
    for b in range(2):
        np.testing.assert_allclose(out[2 + b], warp_ref(img, ms[b], 9, 13), atol=1e-3)
    _native.warp_faces(img, ms[:0], out, offset=5)  # empty batch at the end: no-op
    _native.warp_faces(img, ms, out, 3)
    np.testing.assert_allclose(out[4], warp_ref(img, ms[1], 9, 13), atol=1e-3)


def test_warp_close_to_cv2():
    rng = np.random.default_rng(4)
    img = smooth_image(rng, 360, 480)
    for k in range(12):
        m = random_similarity(rng, (360, 480), inside=k % 3 != 0)
        ref = cv2.warpAffine(
            img, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
        diff = np.abs(run_warp(img, [m])[0] - ref)
        assert diff.max() <= 1.0 and diff.mean() < 0.3


def test_warp_extreme_transforms_are_safe():
    rng = np.random.default_rng(5)
    img = rng.integers(1, 256, (40, 30, 3), dtype=np.uint8)
    extreme = [
        [[1.0, 0.0, 1e15], [0.0, 1.0, -1e15]],
        [[1e-5, 0.0, 0.0], [0.0, 1e-5, 0.0]],  # inverse scales by 1e5
        [[1e6, 0.0, -5e7], [0.0, 1e6, 3e7]],
        [[1e150, 1e150, 0.0], [-1e150, 1e150, 0.0]],
        [[-1.0, 0.0, 29.0], [0.0, -1.0, 39.0]],  # 180 degrees: exact flip
    ]
    out = run_warp(img, extreme, 40, 30)
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)
    for b, m in enumerate(extreme):
        np.testing.assert_allclose(out[b], warp_ref(img, np.array(m), 40, 30), atol=1e-3)
    np.testing.assert_array_equal(out[4], img[::-1, ::-1, ::-1].transpose(2, 0, 1))


def warp_args():
    img = np.zeros((20, 30, 3), np.uint8)
    tr = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 2)
    out = np.zeros((3, 3, 8, 8), np.float32)
    return img, tr, out


@pytest.mark.parametrize(
    "mutate, exc",
    [
        (lambda i, t, o: (i.astype(np.float32), t, o), TypeError),
        (lambda i, t, o: (i.tolist(), t, o), TypeError),
        (lambda i, t, o: (i[..., :2], t, o), ValueError),
        (lambda i, t, o: (np.zeros((0, 4, 3), np.uint8), t, o), ValueError),
        (lambda i, t, o: (i[:, ::2], t, o), ValueError),
        (lambda i, t, o: (i[:, :, 0], t, o), ValueError),
        (lambda i, t, o: (i, t.astype(np.float32), o), TypeError),
        (lambda i, t, o: (i, t[:, :, :2], o), ValueError),
        (lambda i, t, o: (i, t[0], o), ValueError),
        (lambda i, t, o: (i, np.where(np.eye(2, 3) > 0, np.nan, t), o), ValueError),
        (lambda i, t, o: (i, t * [[1e-7], [1e-7]], o), ValueError),  # |det| = 1e-14
        (lambda i, t, o: (i, np.zeros((2, 2, 3)), o), ValueError),
        (lambda i, t, o: (i, t, o.astype(np.float64)), TypeError),
        (lambda i, t, o: (i, t, o[:, :2]), ValueError),
        (lambda i, t, o: (i, t, o[..., ::2]), ValueError),
        (lambda i, t, o: (i, t, o[0]), ValueError),
        (lambda i, t, o: (i, t, o[:1]), ValueError),
        (lambda i, t, o: (i, t, np.zeros((3, 3, 0, 8), np.float32)), ValueError),
    ],
)
def test_warp_rejects(mutate, exc):
    img, tr, out = mutate(*warp_args())
    with pytest.raises(exc):
        _native.warp_faces(img, tr, out)


def test_warp_rejects_offset_readonly_unaligned():
    img, tr, out = warp_args()
    with pytest.raises(ValueError, match="offset"):
        _native.warp_faces(img, tr, out, offset=2)
    with pytest.raises(ValueError, match="offset"):
        _native.warp_faces(img, tr, out, offset=-1)
    with pytest.raises(TypeError):
        _native.warp_faces(img, tr, out, offset=1.5)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _native.warp_faces(img, tr, out)
    raw = np.zeros(3 * 3 * 8 * 8 * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(3, 3, 8, 8)
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        _native.warp_faces(img, tr, unaligned)
    with pytest.raises(TypeError):
        _native.warp_faces(img, tr, np.zeros((3, 3, 8, 8), ">f4"))


# ------------------------------------------------------------------------------------------------
# letterbox


def run_letterbox(img, oh, ow, scale):
    out = np.full((1, 3, oh, ow), -7.0, np.float32)
    _native.letterbox(img, out, scale)
    return out


def test_letterbox_matches_numpy_reference():
    rng = np.random.default_rng(6)
    cases = [
        ((250, 250), (256, 256), 1.0),
        ((720, 1280), (640, 640), 0.5),
        ((480, 640), (640, 640), 1.0),
        ((123, 77), (320, 320), 2.5),
        ((123, 77), (64, 64), 0.37),
        ((1, 1), (8, 8), 5.0),
        ((1, 9), (4, 32), 3.3),
        ((300, 200), (160, 160), 0.5333),
        ((5, 5), (64, 64), 12.6),
    ]
    for (h, w), (oh, ow), s in cases:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_allclose(
            run_letterbox(img, oh, ow, s), letterbox_ref(img, oh, ow, s), rtol=0, atol=1e-3
        )


def test_letterbox_identity_is_exact_copy():
    rng = np.random.default_rng(7)
    for h, w in [(37, 53), (1, 1), (5, 8), (16, 17), (250, 250)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = run_letterbox(img, h + 3, w + 11, np.float64(1.0))
        expect = np.zeros((1, 3, h + 3, w + 11), np.float32)
        expect[0, :, :h, :w] = img.transpose(2, 0, 1)
        np.testing.assert_array_equal(out, expect)


def test_letterbox_close_to_cv2_resize():
    rng = np.random.default_rng(8)
    cases = [((720, 1280), 0.5), ((480, 640), 0.75), ((100, 150), 2.0), ((333, 222), 0.61)]
    for (h, w), s in cases:
        img = smooth_image(rng, h, w)
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR)
        nh, nw = small.shape[:2]
        assert (nh, nw) == (round(h * s), round(w * s))
        oh, ow = nh + 5, nw + 3
        canvas = np.zeros((1, 3, oh, ow), np.float32)
        canvas[0, :, :nh, :nw] = small.transpose(2, 0, 1)
        diff = np.abs(run_letterbox(img, oh, ow, s) - canvas)
        assert diff.max() <= 1.0 and diff.mean() < 0.3


@pytest.mark.parametrize(
    "image, out, scale, exc",
    [
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), 0.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), -1.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), np.nan, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), np.inf, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 9999, 9), np.float32), 65.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), 1.1, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((2, 3, 10, 10), np.float32), 1.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float64), 1.0, TypeError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 10, 10, 3), np.float32), 1.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 20), np.float32)[..., ::2], 1.0,
         ValueError),
        (np.zeros((10, 10, 3), np.uint16), np.zeros((1, 3, 10, 10), np.float32), 1.0, TypeError),
        (np.zeros((10, 10, 4), np.uint8), np.zeros((1, 3, 10, 10), np.float32), 1.0, ValueError),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((1, 3, 10, 10), np.float32), "1", TypeError),
        (np.zeros((10, 10, 3), np.uint8), None, 1.0, TypeError),
    ],
)
def test_letterbox_rejects(image, out, scale, exc):
    with pytest.raises(exc):
        _native.letterbox(image, out, scale)


def test_letterbox_rejects_readonly():
    out = np.zeros((1, 3, 10, 10), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _native.letterbox(np.zeros((10, 10, 3), np.uint8), out, 1.0)


# ------------------------------------------------------------------------------------------------
# nms


def test_nms_matches_python_reference():
    rng = np.random.default_rng(9)
    for trial in range(60):
        n = int(rng.integers(0, 60))
        boxes = np.concatenate(
            [rng.integers(0, 40, (n, 2)), rng.integers(-2, 25, (n, 2))], axis=1
        ).astype(np.float32)
        if trial % 2:
            boxes += rng.normal(0, 0.3, boxes.shape).astype(np.float32)
        scores = rng.integers(0, 5, n).astype(np.float32) / 4  # many ties
        thr = float(rng.choice([0.0, 0.3, 0.5, 1.0, rng.uniform()]))
        max_out = int(rng.integers(0, n + 3))
        got = _native.nms(boxes, scores, thr, max_out)
        assert got.dtype == np.int64
        assert got.tolist() == nms_ref(boxes, scores, thr, max_out)


def test_nms_basic_behaviour():
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 5, 5], [0, 0, 0, 10], [0, 0, 10, 10]], np.float32
    )
    scores = np.array([0.9, 0.95, 0.5, 0.99, 0.9], np.float32)
    assert _native.nms(boxes, scores, 0.5, 10).tolist() == [3, 1, 2]
    assert _native.nms(boxes, scores, 1.0, 10).tolist() == [3, 1, 0, 4, 2]
    assert _native.nms(boxes, scores, 0.5, 2).tolist() == [3, 1]
    assert _native.nms(boxes, scores, 0.5, 0).tolist() == []
    # Suppression needs IoU strictly above the threshold: these two overlap with IoU 1/3.
    pair = np.array([[0, 0, 2, 1], [1, 0, 2, 1]], np.float32)
    two = np.array([0.9, 0.8], np.float32)
    assert _native.nms(pair, two, 1 / 3, 5).tolist() == [0, 1]
    assert _native.nms(pair, two, 0.33, 5).tolist() == [0]
    # numpy scalars are accepted for the scalar arguments
    assert _native.nms(pair, two, np.float32(0.33), np.int64(5)).tolist() == [0]
    empty = _native.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5, 5)
    assert empty.dtype == np.int64 and empty.shape == (0,)


@pytest.mark.parametrize(
    "boxes, scores, thr, max_out, exc",
    [
        (np.zeros((3, 4), np.float64), np.zeros(3, np.float32), 0.5, 5, TypeError),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float64), 0.5, 5, TypeError),
        (np.zeros((3, 5), np.float32), np.zeros(3, np.float32), 0.5, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros(4, np.float32), 0.5, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros((3, 1), np.float32), 0.5, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float32), 1.5, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float32), -0.1, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float32), np.nan, 5, ValueError),
        (np.zeros((3, 4), np.float32), np.zeros(3, np.float32), 0.5, -1, ValueError),
        (np.zeros((3, 4), np.float32), np.array([0, np.nan, 1], np.float32), 0.5, 5, ValueError),
        (np.full((3, 4), np.inf, np.float32), np.zeros(3, np.float32), 0.5, 5, ValueError),
        (np.zeros((4, 3), np.float32).T, np.zeros(3, np.float32), 0.5, 5, ValueError),
        ([[0, 0, 1, 1]], np.zeros(1, np.float32), 0.5, 5, TypeError),
    ],
)
def test_nms_rejects(boxes, scores, thr, max_out, exc):
    with pytest.raises(exc):
        _native.nms(boxes, scores, thr, max_out)


# ------------------------------------------------------------------------------------------------
# scoring

DIMS = [1, 3, 7, 8, 15, 16, 17, 31, 33, 128, 131, 512]


def test_dot_batch_matches_numpy():
    rng = np.random.default_rng(10)
    for d in DIMS:
        for n, q in [(0, 2), (1, 1), (5, 3), (203, 4), (2, 0), (70, 5), (9, 9)]:
            g = rng.standard_normal((n, d)).astype(np.float32)
            qs = rng.standard_normal((q, d)).astype(np.float32)
            got = _native.dot_batch(g, qs)
            assert got.dtype == np.float32 and got.shape == (q, n)
            ref = qs.astype(np.float64) @ g.astype(np.float64).T
            absdot = np.abs(qs.astype(np.float64)) @ np.abs(g.astype(np.float64)).T
            assert np.all(np.abs(got - ref) <= dot_tol(absdot))


def test_dot_batch_score_does_not_depend_on_batch():
    rng = np.random.default_rng(13)
    for d in (5, 24, 128, 131):
        g = rng.standard_normal((37, d)).astype(np.float32)
        qs = rng.standard_normal((9, d)).astype(np.float32)
        full = _native.dot_batch(g, qs)
        for k in range(9):
            np.testing.assert_array_equal(full[k], _native.dot_batch(g, qs[k : k + 1])[0])
        np.testing.assert_array_equal(full[5:], _native.dot_batch(g, qs[5:]))


def test_quantize_and_dot_int8_match_reference():
    rng = np.random.default_rng(11)
    for d in DIMS:
        x = rng.standard_normal((37, d)).astype(np.float32)
        x[3] = 0.0
        x[5, 0] = 1e30 if d > 1 else 0.0
        x[6] *= 1e-30
        x[7] *= 1e-44  # max / 127 underflows to 0 for most rows: treated as a zero row
        x[8] *= 1e-39  # subnormal scale
        codes, scale = _native.quantize_int8(x)
        rc, rs = quantize_ref(x)
        assert codes.dtype == np.int8 and scale.dtype == np.float32
        np.testing.assert_array_equal(scale, rs)
        np.testing.assert_array_equal(codes, rc)
        assert scale[3] == 1.0 and not codes[3].any()
        q = rng.standard_normal(d).astype(np.float32)
        got = _native.dot_int8(codes, scale, q)
        ref = scale.astype(np.float64) * (codes.astype(np.float64) @ q.astype(np.float64))
        absdot = scale.astype(np.float64) * (np.abs(codes.astype(np.float64)) @ np.abs(q))
        assert got.dtype == np.float32 and got.shape == (37,)
        assert np.all(np.abs(got - ref) <= dot_tol(absdot))


def test_quantize_rounds_half_to_even():
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 126.5, -127.0]], np.float32)
    codes, scale = _native.quantize_int8(x)
    assert scale[0] == 1.0
    assert codes.tolist() == [[127, 0, 2, 2, 0, -2, 126, -127]]


def test_int8_scores_approximate_float_scores():
    rng = np.random.default_rng(12)
    g = rng.standard_normal((500, 128)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = g[17] + 0.05 * rng.standard_normal(128).astype(np.float32)
    q /= np.linalg.norm(q)
    codes, scale = _native.quantize_int8(g)
    approx = _native.dot_int8(codes, scale, q)
    exact = _native.dot_batch(g, q[None])[0]
    assert np.abs(approx - exact).max() < 0.01
    assert int(np.argmax(approx)) == 17


TOPK_SHAPES = [(0, 2, 3), (1, 1, 1), (5, 3, 10), (5, 3, 5), (203, 4, 5), (700, 70, 7),
               (300, 5, 300), (300, 5, 299), (2, 0, 1), (40, 9, 1)]


def test_topk_ip_matches_argsort():
    rng = np.random.default_rng(14)
    for d in (1, 7, 16, 17, 128, 131):
        for n, nq, k in TOPK_SHAPES:
            g = rng.standard_normal((n, d)).astype(np.float32)
            q = rng.standard_normal((nq, d)).astype(np.float32)
            scores, rows = _native.topk_ip(g, q, k)
            kk = min(k, n)
            assert scores.shape == rows.shape == (nq, kk)
            assert scores.dtype == np.float32 and rows.dtype == np.int64
            # Bit for bit the scores of dot_batch, ranked as documented.
            ref_s, ref_r = topk_ref(_native.dot_batch(g, q), k)
            np.testing.assert_array_equal(rows, ref_r, err_msg=f"d={d} n={n} q={nq} k={k}")
            np.testing.assert_array_equal(scores, ref_s)
            # And numpy's argsort of exact float64 scores picks the same set (no near-ties here).
            if n and nq:
                exact = q.astype(np.float64) @ g.astype(np.float64).T
                order = np.argsort(-exact, axis=1, kind="stable")[:, :kk]
                np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(order, axis=1))
                absdot = np.abs(q.astype(np.float64)) @ np.abs(g.astype(np.float64)).T
                top = np.take_along_axis(exact, rows, axis=1)
                assert np.all(np.abs(scores - top) <= dot_tol(np.take_along_axis(absdot, rows, 1)))


def test_topk_ip_large_gallery_is_streamed():
    # 6000 x 128 floats (3 MB) is past the cache-resident size: the one-row-stream path, several
    # query groups (4 + remainder) and many row tiles.
    rng = np.random.default_rng(15)
    g = rng.standard_normal((6000, 128)).astype(np.float32)
    for nq in (1, 3, 6, 67):
        q = rng.standard_normal((nq, 128)).astype(np.float32)
        scores, rows = _native.topk_ip(g, q, 9)
        ref_s, ref_r = topk_ref(_native.dot_batch(g, q), 9)
        np.testing.assert_array_equal(rows, ref_r)
        np.testing.assert_array_equal(scores, ref_s)
        # Per-query results do not depend on the batch.
        one_s, one_r = _native.topk_ip(g, q[-1:], 9)
        np.testing.assert_array_equal(one_r[0], rows[-1])
        np.testing.assert_array_equal(one_s[0], scores[-1])


def test_topk_ip_ties_prefer_lower_rows():
    rng = np.random.default_rng(16)
    # Small integers: every score is exact, and many are equal.
    g = rng.integers(-2, 3, (900, 8)).astype(np.float32)
    g[500:] = g[:400]  # exact duplicate rows as well
    q = rng.integers(-2, 3, (7, 8)).astype(np.float32)
    for k in (1, 2, 5, 64, 900, 1000):
        scores, rows = _native.topk_ip(g, q, k)
        exact = q.astype(np.int64) @ g.astype(np.int64).T
        for qi in range(7):
            order = np.lexsort((np.arange(900), -exact[qi]))[: min(k, 900)]
            np.testing.assert_array_equal(rows[qi], order)
            np.testing.assert_array_equal(scores[qi], exact[qi][order].astype(np.float32))
    # All rows equal: the first k rows, in order.
    same = np.ones((50, 4), np.float32)
    _, rows = _native.topk_ip(same, np.ones((2, 4), np.float32), 6)
    np.testing.assert_array_equal(rows, [list(range(6))] * 2)


def test_topk_ip_nan_rows_rank_last():
    g = np.array([[1, 0], [np.nan, 0], [0.5, 0], [np.inf, 0], [-np.inf, 0], [np.nan, 1]],
                 np.float32)
    q = np.array([[1, 0], [-1, 0]], np.float32)
    scores, rows = _native.topk_ip(g, q, 10)
    # q0: inf, 1, 0.5, -inf, then the NaN rows by index (row 5 is nan*1 + 0*1 = NaN).
    np.testing.assert_array_equal(rows[0], [3, 0, 2, 4, 1, 5])
    np.testing.assert_array_equal(rows[1], [4, 2, 0, 3, 1, 5])
    assert np.isnan(scores[0, 4:]).all() and not np.isnan(scores[0, :4]).any()
    _, rows = _native.topk_ip(g, q, 2)
    np.testing.assert_array_equal(rows, [[3, 0], [4, 2]])
    # Many NaN rows early: the heap fills with NaN first and real scores still win.
    g2 = np.vstack([np.full((10, 2), np.nan, np.float32), g[[0, 2]]])
    _, rows = _native.topk_ip(g2, q[:1], 3)
    np.testing.assert_array_equal(rows[0], [10, 11, 0])


@pytest.mark.parametrize(
    "fn, args, exc",
    [
        ("dot_batch", (np.zeros((3, 4), np.float64), np.zeros((1, 4), np.float32)), TypeError),
        ("dot_batch", (np.zeros((3, 4), np.float32), np.zeros((1, 5), np.float32)), ValueError),
        ("dot_batch", (np.zeros((3, 4), np.float32), np.zeros(4, np.float32)), ValueError),
        ("dot_batch", (np.zeros((3, 0), np.float32), np.zeros((1, 0), np.float32)), ValueError),
        ("dot_batch", (np.zeros((3, 8), np.float32)[:, ::2], np.zeros((1, 4), np.float32)),
         ValueError),
        ("dot_batch", (np.zeros((4, 3), np.float32).T, np.zeros((1, 4), np.float32)), ValueError),
        ("dot_batch", (np.zeros((3, 4), np.float32), [[0.0] * 4]), TypeError),
        ("quantize_int8", (np.zeros((3, 4), np.float64),), TypeError),
        ("quantize_int8", (np.zeros(4, np.float32),), ValueError),
        ("quantize_int8", (np.zeros((3, 0), np.float32),), ValueError),
        ("quantize_int8", (np.array([[1, np.nan]], np.float32),), ValueError),
        ("quantize_int8", (np.array([[1, 2], [1, -np.inf]], np.float32),), ValueError),
        ("dot_int8", (np.zeros((3, 4), np.uint8), np.ones(3, np.float32), np.ones(4, np.float32)),
         TypeError),
        ("dot_int8", (np.zeros((3, 4), np.int8), np.ones(3, np.float64), np.ones(4, np.float32)),
         TypeError),
        ("dot_int8", (np.zeros((3, 4), np.int8), np.ones(2, np.float32), np.ones(4, np.float32)),
         ValueError),
        ("dot_int8", (np.zeros((3, 4), np.int8), np.ones(3, np.float32), np.ones(5, np.float32)),
         ValueError),
        ("dot_int8", (np.zeros((3, 4), np.int8), np.ones(3, np.float32),
                      np.ones((1, 4), np.float32)), ValueError),
        ("dot_int8", (np.zeros((3, 8), np.int8)[:, ::2], np.ones(3, np.float32),
                      np.ones(4, np.float32)), ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float64), np.zeros((1, 4), np.float32), 1), TypeError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float16), 1), TypeError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 5), np.float32), 1), ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros(4, np.float32), 1), ValueError),
        ("topk_ip", (np.zeros(4, np.float32), np.zeros((1, 4), np.float32), 1), ValueError),
        ("topk_ip", (np.zeros((3, 0), np.float32), np.zeros((1, 0), np.float32), 1), ValueError),
        ("topk_ip", (np.zeros((3, 8), np.float32)[:, ::2], np.zeros((1, 4), np.float32), 1),
         ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((4, 2), np.float32).T, 1),
         ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float32), 0), ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float32), -5), ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float32), 1.5), TypeError),
        ("topk_ip", (np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float32), 2**64),
         TypeError),
        ("topk_ip", (np.zeros((3, 2), np.float32), np.array([[1, np.nan]], np.float32), 1),
         ValueError),
        ("topk_ip", (np.zeros((3, 2), np.float32), np.array([[1, -np.inf]], np.float32), 1),
         ValueError),
        ("topk_ip", (np.zeros((3, 4), np.float32), [[0.0] * 4], 1), TypeError),
    ],
)
def test_scoring_rejects(fn, args, exc):
    with pytest.raises(exc):
        getattr(_native, fn)(*args)


def test_simd_level_name():
    assert _native.simd_level() in ("baseline", "avx2", "avx512")


# ------------------------------------------------------------------------------------------------
# Every SIMD level, in subprocesses (the level is chosen once per process)

SIMD_SCRIPT = textwrap.dedent(
    """
    import importlib.machinery, importlib.util, json, sys
    import numpy as np
    path, out_path = sys.argv[1], sys.argv[2]
    loader = importlib.machinery.ExtensionFileLoader("matcher._native", path)
    spec = importlib.util.spec_from_file_location("matcher._native", path, loader=loader)
    nat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nat)
    rng = np.random.default_rng(123)
    res = {"level": nat.simd_level()}
    arrays = {}
    for d in (1, 7, 16, 17, 128, 131):
        g = rng.standard_normal((13, d)).astype(np.float32)
        q = rng.standard_normal((3, d)).astype(np.float32)
        arrays[f"g{d}"], arrays[f"q{d}"] = g, q
        arrays[f"dot{d}"] = nat.dot_batch(g, q)
        codes, scale = nat.quantize_int8(g)
        arrays[f"codes{d}"], arrays[f"scale{d}"] = codes, scale
        arrays[f"dot8_{d}"] = nat.dot_int8(codes, scale, q[0])
        # Top-k: cache-resident (four-row kernel for the lone queries) and streamed galleries.
        for n in (700, 2600):
            gt = rng.standard_normal((n, d)).astype(np.float32)
            gt[n // 2] = gt[3]  # a tie
            qt = rng.standard_normal((6, d)).astype(np.float32)
            qt[5] = 0.0  # all scores 0: ties everywhere
            arrays[f"tg{n}_{d}"], arrays[f"tq{n}_{d}"] = gt, qt
            arrays[f"tdot{n}_{d}"] = nat.dot_batch(gt, qt)
            arrays[f"ts{n}_{d}"], arrays[f"tr{n}_{d}"] = nat.topk_ip(gt, qt, 7)
            one = [nat.topk_ip(gt, qt[i : i + 1], 7) for i in range(6)]
            arrays[f"ts1_{n}_{d}"] = np.vstack([o[0] for o in one])
            arrays[f"tr1_{n}_{d}"] = np.vstack([o[1] for o in one])
        arrays[f"tsmall{d}"], arrays[f"trsmall{d}"] = nat.topk_ip(g, q, 20)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    m = np.array([[[0.8, -0.3, 20.0], [0.3, 0.8, -30.0]], [[1.7, 0.2, -50.0], [-0.2, 1.7, 5.0]]])
    warp = np.zeros((2, 3, 112, 112), np.float32)
    nat.warp_faces(img, m, warp)
    lb = np.zeros((1, 3, 72, 96), np.float32)
    nat.letterbox(img, lb, 0.75)
    arrays.update(img=img, m=m, warp=warp, lb=lb)
    np.savez(out_path, **arrays)
    print(json.dumps(res))
    """
)

LEVELS = ["baseline", "avx2", "avx512"]


def run_level(tmp_path, level):
    env = dict(os.environ)
    env.pop("MATCHER_SIMD", None)
    if level is not None:
        env["MATCHER_SIMD"] = level
    out_path = tmp_path / f"simd_{level}.npz"
    proc = subprocess.run(
        [sys.executable, "-c", SIMD_SCRIPT, _native.__file__, str(out_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])["level"], np.load(out_path)


def test_every_simd_level(tmp_path):
    default_level, default = run_level(tmp_path, None)
    default = {k: default[k] for k in default.files}  # the next run reuses the file
    rank = {name: i for i, name in enumerate(LEVELS)}
    results = {}
    for level in LEVELS:
        got_level, arrays = run_level(tmp_path, level)
        # Never higher than requested, never higher than the CPU supports.
        assert rank[got_level] == min(rank[level], rank[default_level])
        results[got_level] = arrays
    bogus_level, _ = run_level(tmp_path, "sse9")
    assert bogus_level == default_level
    for k, v in default.items():  # run-time dispatch runs exactly the kernels of its level
        np.testing.assert_array_equal(v, results[default_level][k], err_msg=k)
    assert default_level == _native.simd_level() or "MATCHER_SIMD" in os.environ

    for level, a in results.items():
        for d in (1, 7, 16, 17, 128, 131):
            g, q = a[f"g{d}"].astype(np.float64), a[f"q{d}"].astype(np.float64)
            tol = dot_tol(np.abs(q) @ np.abs(g).T)
            assert np.all(np.abs(a[f"dot{d}"] - q @ g.T) <= tol), (level, d)
            rc, rs = quantize_ref(a[f"g{d}"])
            np.testing.assert_array_equal(a[f"codes{d}"], rc, err_msg=level)
            np.testing.assert_array_equal(a[f"scale{d}"], rs, err_msg=level)
            c = rc.astype(np.float64)
            ref8 = rs * (c @ q[0])
            assert np.all(np.abs(a[f"dot8_{d}"] - ref8) <= dot_tol(rs * (np.abs(c) @ np.abs(q[0]))))
            # Levels agree with each other to float rounding.
            base = results["baseline"]
            assert np.all(np.abs(a[f"dot{d}"] - base[f"dot{d}"]) <= 2 * tol)
            # Top-k: exactly the ranking of this level's dot_batch scores, alone or batched.
            ref_s, ref_r = topk_ref(a[f"dot{d}"], 20)
            np.testing.assert_array_equal(a[f"trsmall{d}"], ref_r, err_msg=level)
            np.testing.assert_array_equal(a[f"tsmall{d}"], ref_s, err_msg=level)
            for n in (700, 2600):
                ref_s, ref_r = topk_ref(a[f"tdot{n}_{d}"], 7)
                for key in ("", "1_"):
                    np.testing.assert_array_equal(a[f"tr{key}{n}_{d}"], ref_r, err_msg=level)
                    np.testing.assert_array_equal(a[f"ts{key}{n}_{d}"], ref_s, err_msg=level)
                np.testing.assert_array_equal(ref_r[5], np.arange(7))
                gt, qt = a[f"tg{n}_{d}"].astype(np.float64), a[f"tq{n}_{d}"].astype(np.float64)
                exact = qt @ gt.T
                top = np.take_along_axis(exact, ref_r, axis=1)
                tol = dot_tol(np.take_along_axis(np.abs(qt) @ np.abs(gt).T, ref_r, axis=1))
                assert np.all(np.abs(ref_s - top) <= tol), (level, n, d)
                # The same rows as numpy's ranking of exact scores (as sets; no near-ties).
                order = np.argsort(-exact[:5], axis=1, kind="stable")[:, :7]
                np.testing.assert_array_equal(np.sort(ref_r[:5], 1), np.sort(order, 1))
        for b in range(2):
            np.testing.assert_allclose(a["warp"][b], warp_ref(a["img"], a["m"][b], 112, 112),
                                       atol=1e-3, err_msg=level)
        np.testing.assert_allclose(a["lb"], letterbox_ref(a["img"], 72, 96, 0.75), atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Property tests: arbitrary inputs never crash; valid inputs give reference results

DTYPES = [np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def any_array(draw, max_dims=4, max_side=6):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    arr = draw(hnp.arrays(dtype, shape))
    layout = draw(st.sampled_from(["c", "f", "strided", "readonly"]))
    if layout == "f":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1 and arr.shape[-1] > 0:
        big = np.zeros(arr.shape[:-1] + (arr.shape[-1] * 2,), arr.dtype)
        big[..., ::2] = arr
        arr = big[..., ::2]
    elif layout == "readonly":
        arr = arr.copy()
        arr.setflags(write=False)
    return arr


def call_or_reject(fn, *args):
    try:
        return fn(*args)
    except BAD_INPUT:
        return None


@FAST
@given(a=any_array(), b=any_array(), c=any_array(max_dims=4, max_side=4),
       offset=st.integers(-3, 5), scale=st.floats(allow_nan=True, allow_infinity=True),
       thr=st.floats(-1, 2), k=st.integers(-2, 10))
def test_fuzz_never_crashes(a, b, c, offset, scale, thr, k):
    call_or_reject(_native.similarity_transform, a, b)
    call_or_reject(_native.warp_faces, a, b, c, offset)
    call_or_reject(_native.letterbox, a, c, scale)
    call_or_reject(_native.nms, a, b, thr, k)
    call_or_reject(_native.dot_batch, a, b)
    call_or_reject(_native.quantize_int8, a)
    call_or_reject(_native.dot_int8, a, b, c)
    call_or_reject(_native.topk_ip, a, b, k)


@FAST
@given(
    h=st.integers(1, 24), w=st.integers(1, 24), oh=st.integers(1, 12), ow=st.integers(1, 12),
    theta=st.floats(-4, 4), logs=st.floats(-3, 3), tx=st.floats(-60, 60), ty=st.floats(-60, 60),
    shear=st.floats(-0.5, 0.5), seed=st.integers(0, 2**32 - 1), swap=st.booleans(),
)
def test_warp_property_matches_reference(h, w, oh, ow, theta, logs, tx, ty, shear, seed, swap):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = float(np.exp(logs))
    m = np.array([[s * np.cos(theta), -s * np.sin(theta) + shear, tx],
                  [s * np.sin(theta), s * np.cos(theta), ty]])
    assume(abs(np.linalg.det(m[:, :2])) > 1e-6)
    out = np.full((1, 3, oh, ow), -7.0, np.float32)
    _native.warp_faces(img, m[None], out, 0, swap)
    np.testing.assert_allclose(out[0], warp_ref(img, m, oh, ow, swap), atol=1e-3)


@FAST
@given(h=st.integers(1, 30), w=st.integers(1, 30), scale=st.floats(0.05, 4.0),
       pad_h=st.integers(0, 5), pad_w=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_letterbox_property_matches_reference(h, w, scale, pad_h, pad_w, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    nh, nw = round(h * scale), round(w * scale)
    oh, ow = max(nh, 1) + pad_h, max(nw, 1) + pad_w
    np.testing.assert_allclose(
        run_letterbox(img, oh, ow, scale), letterbox_ref(img, oh, ow, scale), atol=1e-3
    )
    if nh > 1 and nw > 1:
        with pytest.raises(ValueError, match="does not fit"):
            _native.letterbox(img, np.zeros((1, 3, nh - 1, nw), np.float32), scale)


@FAST
@given(
    data=hnp.arrays(np.float32, st.tuples(st.integers(0, 30), st.just(4)),
                    elements=st.floats(-20, 40, width=32)),
    score_levels=st.integers(1, 6), thr=st.floats(0, 1), max_out=st.integers(0, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_nms_property_matches_reference(data, score_levels, thr, max_out, seed):
    scores = (np.random.default_rng(seed).integers(0, score_levels, len(data)) / score_levels)
    scores = scores.astype(np.float32)
    assert _native.nms(data, scores, thr, max_out).tolist() == nms_ref(data, scores, thr, max_out)


@FAST
@given(
    g=hnp.arrays(np.float32, st.tuples(st.integers(0, 9), st.integers(1, 40)),
                 elements=st.floats(-1e3, 1e3, width=32)),
    nq=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
)
def test_scoring_property_matches_reference(g, nq, seed):
    q = np.random.default_rng(seed).standard_normal((nq, g.shape[1])).astype(np.float32)
    got = _native.dot_batch(g, q)
    g64, q64 = g.astype(np.float64), q.astype(np.float64)
    assert np.all(np.abs(got - q64 @ g64.T) <= dot_tol(np.abs(q64) @ np.abs(g64).T))
    codes, scale = _native.quantize_int8(g)
    rc, rs = quantize_ref(g) if len(g) else (np.zeros(g.shape, np.int8), np.zeros(0, np.float32))
    np.testing.assert_array_equal(codes, rc)
    np.testing.assert_array_equal(scale, rs)
    if nq:
        c = rc.astype(np.float64)
        got8 = _native.dot_int8(codes, scale, q[0])
        tol = dot_tol(rs * (np.abs(c) @ np.abs(q64[0])))
        assert np.all(np.abs(got8 - rs * (c @ q64[0])) <= tol)


@FAST
@given(
    g=hnp.arrays(np.float32, st.tuples(st.integers(0, 40), st.integers(1, 20)),
                 elements=st.integers(-3, 3).map(float)),
    nq=st.integers(0, 6), k=st.integers(1, 50), seed=st.integers(0, 2**32 - 1),
)
def test_topk_property_matches_reference(g, nq, k, seed):
    # Small-integer data: exact scores and many ties.
    q = np.random.default_rng(seed).integers(-3, 4, (nq, g.shape[1])).astype(np.float32)
    scores, rows = _native.topk_ip(g, q, k)
    exact = q.astype(np.int64) @ g.astype(np.int64).T
    kk = min(k, len(g))
    assert rows.shape == scores.shape == (nq, kk)
    for qi in range(nq):
        order = np.lexsort((np.arange(len(g)), -exact[qi]))[:kk]
        np.testing.assert_array_equal(rows[qi], order)
        np.testing.assert_array_equal(scores[qi], exact[qi][order])
