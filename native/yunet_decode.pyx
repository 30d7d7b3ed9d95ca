# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Decode YuNet's raw outputs (three strides of cls/obj/bbox/kps) into scored face candidates.

Per anchor at grid cell (row, col) of stride S (see models/yunet-2023mar.json):
score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1)); box centre ((col + dx) * S, (row + dy) * S),
size (exp(dw) * S, exp(dh) * S); landmark k ((kx + col) * S, (ky + row) * S). Only anchors with a
score at or above the threshold are decoded. Non-maximum suppression happens afterwards (native).
"""

import numpy as np

cimport numpy as cnp
from libc.math cimport exp, isfinite, sqrt

cnp.import_array()


cdef inline float _clip01(float v) noexcept nogil:
    if v < 0.0 or v != v:
        return 0.0
    if v > 1.0:
        return 1.0
    return v


cdef Py_ssize_t _decode_stride(
    const float[:, ::1] cls, const float[:, ::1] obj, const float[:, ::1] bbox,
    const float[:, ::1] kps, int stride, int rows, int cols, float threshold,
    float[:, ::1] boxes, float[:, ::1] landmarks, float[::1] scores, Py_ssize_t n,
) noexcept nogil:
    cdef int r, c, k
    cdef Py_ssize_t idx
    cdef float score, cx, cy, w, h, dw, dh
    for r in range(rows):
        for c in range(cols):
            idx = <Py_ssize_t>r * cols + c
            score = sqrt(_clip01(cls[idx, 0]) * _clip01(obj[idx, 0]))
            if score < threshold:
                continue
            dw = bbox[idx, 2]
            dh = bbox[idx, 3]
            # exp() of a huge regression output would be inf; such an anchor is garbage.
            if not (isfinite(bbox[idx, 0]) and isfinite(bbox[idx, 1]) and dw < 30.0 and dh < 30.0):
                continue
            cx = (c + bbox[idx, 0]) * stride
            cy = (r + bbox[idx, 1]) * stride
            w = <float>exp(dw) * stride
            h = <float>exp(dh) * stride
            boxes[n, 0] = cx - 0.5 * w
            boxes[n, 1] = cy - 0.5 * h
            boxes[n, 2] = w
            boxes[n, 3] = h
            for k in range(5):
                landmarks[n, 2 * k] = (kps[idx, 2 * k] + c) * stride
                landmarks[n, 2 * k + 1] = (kps[idx, 2 * k + 1] + r) * stride
            scores[n] = score
            n += 1
    return n


def _as_rows(a, Py_ssize_t n, Py_ssize_t width, str name):
    arr = np.asarray(a)
    if arr.dtype != np.float32:
        raise TypeError(f"{name}: expected float32, got {arr.dtype}")
    if arr.size != n * width:
        raise ValueError(f"{name}: expected {n}x{width} values, got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(n, width))


def decode(outputs, int input_h, int input_w, float score_threshold, strides=(8, 16, 32)):
    """Decode YuNet outputs into ``(boxes (M,4) xywh, landmarks (M,5,2), scores (M,))``, float32.

    ``outputs`` maps ``cls_S``, ``obj_S``, ``bbox_S``, ``kps_S`` to arrays of N x {1,1,4,10}
    values, N = (input_h / S) * (input_w / S); ``input_h`` and ``input_w`` must be multiples of
    every stride. Coordinates are in the detector-input pixel frame.
    """
    if input_h <= 0 or input_w <= 0:
        raise ValueError(f"input size must be positive, got {input_h}x{input_w}")
    if not (0.0 <= score_threshold <= 1.0):
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    cdef list per = []
    cdef Py_ssize_t total = 0, n = 0
    cdef int s, rows, cols
    for s in strides:
        if s <= 0 or input_h % s or input_w % s:
            raise ValueError(f"input size {input_h}x{input_w} is not a multiple of stride {s}")
        rows = input_h // s
        cols = input_w // s
        count = <Py_ssize_t>rows * cols
        try:
            arrays = (
                _as_rows(outputs[f"cls_{s}"], count, 1, f"cls_{s}"),
                _as_rows(outputs[f"obj_{s}"], count, 1, f"obj_{s}"),
                _as_rows(outputs[f"bbox_{s}"], count, 4, f"bbox_{s}"),
                _as_rows(outputs[f"kps_{s}"], count, 10, f"kps_{s}"),
            )
        except KeyError as exc:
            raise ValueError(f"missing detector output {exc}") from None
        per.append((s, rows, cols, arrays))
        total += count
    boxes = np.empty((total, 4), np.float32)
    landmarks = np.empty((total, 10), np.float32)
    scores = np.empty(total, np.float32)
    cdef float[:, ::1] bv = boxes
    cdef float[:, ::1] lv = landmarks
    cdef float[::1] sv = scores
    cdef const float[:, ::1] cls, obj, bb, kp
    for s, rows, cols, arrays in per:
        cls, obj, bb, kp = arrays
        with nogil:
            n = _decode_stride(cls, obj, bb, kp, s, rows, cols, score_threshold, bv, lv, sv, n)
    return boxes[:n], landmarks[:n].reshape(n, 5, 2), scores[:n]
