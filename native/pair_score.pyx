# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-pair template scoring without per-call buffer acquisition.

A :class:`PackedVector` takes a read-only, C-contiguous float32 vector once (at template
construction) and keeps a pointer to it, so scoring one 1:1 pair costs a function call and a
128-term dot product instead of numpy's dispatch and two buffer acquisitions.
"""

import numpy as np

cimport numpy as cnp

cnp.import_array()


cdef class PackedVector:
    """A read-only float32 vector held for fast scoring (keeps the array alive)."""

    cdef object _array
    cdef const float* _data
    cdef readonly Py_ssize_t size

    def __cinit__(self, array):
        if not isinstance(array, np.ndarray):
            raise TypeError("PackedVector needs a numpy array")
        if array.dtype != np.float32 or array.ndim != 1:
            raise TypeError(f"PackedVector needs a 1-D float32 array, got {array.dtype} {array.shape}")
        if array.flags.writeable or not array.flags.c_contiguous or array.shape[0] == 0:
            raise ValueError("PackedVector needs a non-empty, C-contiguous, read-only array")
        self._array = array
        self._data = <const float*>cnp.PyArray_DATA(<cnp.ndarray>array)
        self.size = array.shape[0]


def cosine(PackedVector a not None, PackedVector b not None) -> float:
    """Dot product of two unit vectors (their cosine), clipped to [-1, 1]."""
    if a.size != b.size:
        raise ValueError(f"vector sizes differ: {a.size} vs {b.size}")
    cdef double s = 0.0
    cdef Py_ssize_t i
    cdef const float* x = a._data
    cdef const float* y = b._data
    for i in range(a.size):
        s += <double>x[i] * y[i]
    if s > 1.0:
        return 1.0
    if s < -1.0:
        return -1.0
    return s
