"""Vector index: top-k inner-product search over unit float32 templates keyed by int64 ids.

:class:`VectorIndex` always returns EXACT scores. It keeps its own dense float32 matrix of every
vector (one row each, capacity grown by doubling, an id -> row map and a row -> id array); the
kinds differ only in how candidates are found:

``"flat"``
    Exhaustive search of the dense matrix with the native kernel ``matcher._native.topk_ip``
    (one single-threaded pass, SIMD-dispatched; no FAISS).
``"hnsw"``
    FAISS ``IndexHNSWFlat`` (M=32, efConstruction=80; efSearch = max(64, 2 * candidates)).
    Measured on random 128-d unit vectors with planted mates at cosine 0.6-0.8 (2 cores):
    build 35-50 s at 10^5 and 605 s at 10^6 (2 threads), ~1.4 KiB per template; mate
    recall@1 0.95 at 10^5 but 0.53 at 10^6 with k=1 (efSearch 64).
``"ivf"``
    FAISS ``IVF{nlist},SQ8``: nlist = 4 * sqrt(N) rounded to a power of two and clamped to
    [64, 65536] (and to N / 39, so k-means has >= 39 points per list), trained on a
    deterministic sample of at most 64 * nlist vectors with a fixed seed; nprobe =
    max(16, nlist // 8) (see IVF_PROBE_DIVISOR for the recall it buys; settable through
    :attr:`VectorIndex.nprobe`). Retrained (rebuilt) when the index grows so that the rule gives
    >= 4x the current nlist.
any other string
    A FAISS index-factory string (``"IVF1024,SQ8"``, ``"HNSW32"``, ``"IVF4096,SQfp16"``, ...),
    built with ``faiss.index_factory(dim, s, faiss.METRIC_INNER_PRODUCT)``. IVF factory indexes
    get the same seed / nprobe rule as ``"ivf"``, HNSW ones the same efSearch rule.
``"auto"`` (default)
    ``"flat"`` while ``len(index) <= auto_threshold``; the add that crosses the threshold builds
    an ``"ivf"`` index over all vectors; removals that bring it below ``auto_threshold / 2`` go
    back to flat.

Approximate kinds ask FAISS for ``max(4 * k, 32)`` candidates, re-score them exactly against the
dense matrix (with the same native kernel as the flat path, so a pair's score does not depend on
the kind in use) and return the best ``k``. Scores can therefore be trusted; only recall is
approximate.

Training: IVF (and other factory indexes that need training) need enough vectors: until there
are ``39 * max(nlist, 2**pq_bits)`` of them (at least 1000 for other trained types), searches
are exact flat searches and :attr:`VectorIndex.kind_in_use` says ``"flat"``; the add that reaches
that count trains and builds the index over everything present. If FAISS cannot train, the
index stays flat and tries again at twice the size (a ``RuntimeWarning`` says so).

Removal works for every kind: IVF indexes remove the ids from FAISS (``remove_ids``, O(N) per
call). Indexes that cannot remove (HNSW, and any non-IVF factory index) keep tombstones: HNSW
searches exclude them in the graph walk (``IDSelectorBitmap``), others over-fetch and filter;
every candidate is also checked against the live set, so a removed id is never returned. When
tombstones exceed 20 % of the FAISS index it is rebuilt from the dense matrix (for HNSW that
is a full graph build: O(N log N), minutes at 10^6). Re-adding a removed id works.

Threads: ``threads`` is how many OpenMP threads FAISS may use (search, training, adds).
``faiss.omp_set_num_threads`` is global state as far as callers can tell (per OS thread in
libgomp, process-wide elsewhere), so it is set again before every FAISS call; indexes with
different settings used from one thread never see each other's. The default is 1: a single-query
FAISS search of 10^5 x 128 took 1.9 ms with one OpenMP thread and 9.0 ms with two on the 2-core
development machines. The native flat path is single-threaded per call.

Concurrency: not thread-safe for writes (add / remove / threads setter); the Gallery holds a
readers-writer lock. Concurrent :meth:`VectorIndex.search` calls on an unchanging index are safe:
search only reads shared state (per-call FAISS parameter objects, no shared scratch), and both
the native kernel and FAISS release the GIL.

Serialisation (:meth:`VectorIndex.to_bytes`) is a plain length-prefixed little-endian layout,
see ``_MAGIC``. It ends with a BLAKE2b-128 digest of everything before it, so truncated or
corrupted bytes raise :class:`~matcher.errors.InputError` before anything is parsed. The FAISS
part is FAISS's own serialisation; after loading, its type, dimension, metric and size and (for
HNSW / IVF) the graph / inverted-list ids are checked against the dense part. Bytes crafted to
pass the digest are trusted beyond those checks: load only bytes you wrote (the Gallery layer
authenticates and encrypts them).
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterable

import faiss
import numpy as np

from . import _native
from .errors import InputError

__all__ = ["VectorIndex"]

NAMED_KINDS = ("auto", "flat", "hnsw", "ivf")
#: |norm - 1| allowed for an added vector.
NORM_TOLERANCE = 1e-3
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_MIN_EF_SEARCH = 64
#: Tombstones above this fraction of a non-removable FAISS index trigger a rebuild.
TOMBSTONE_REBUILD_FRACTION = 0.2
IVF_MIN_NLIST = 64
IVF_MAX_NLIST = 65536
#: Default nprobe = max(16, nlist // IVF_PROBE_DIVISOR): 1/8 of the lists. Measured on random
#: 128-d unit vectors with planted mates at cosine 0.6-0.8 (the worst case for IVF: no cluster
#: structure), mate recall@1 at 10^6 (nlist 4096) was 0.48 / 0.72 / 0.90 / 0.96 with nlist // 256
#: / 64 / 16 / 8 lists probed (0.29 / 0.59 / 1.38 / 3.1 ms; exact flat search: 19 ms); at 10^5
#: (nlist 1024) 0.69 / 0.89 / 0.95 / 0.99 with 16 / 64 / 128 / 256. See benchmarks/index_report.py.
IVF_PROBE_DIVISOR = 8
#: k-means needs at least this many training points per list (FAISS warns below it).
MIN_POINTS_PER_LIST = 39
#: Training sample: at most this many points per list (a deterministic subset above that).
TRAIN_POINTS_PER_LIST = 64
#: Other factory indexes that need training wait for at least this many vectors.
MIN_GENERIC_TRAIN = 1000
#: Seed of every FAISS k-means and of the training subsample: builds are deterministic.
SEED = 1234
MIN_CANDIDATES = 32
CANDIDATE_FACTOR = 4

# to_bytes layout, little-endian:
#   magic "MTVX" | u16 version | u16 flags (0)
#   u32 dim | u64 auto_threshold | u64 n
#   u16 len + utf-8 kind | u16 len + utf-8 faiss spec ("" = none: flat search)
#   i64[n] ids | f32[n * dim] vectors (row order)
#   if spec: u8 labels_are_ids | (if not: u64 nslots | i64[n] slot of each row)
#            u64 len + FAISS serialize_index bytes
#   16-byte BLAKE2b digest of everything above
_MAGIC = b"MTVX"
_VERSION = 1
_DIGEST = 16
_MAX_DIM = 1 << 16
_PYINT_BYTES = 32  # rough size of one Python int object in the id -> row dict


def _omp(threads: int) -> None:
    faiss.omp_set_num_threads(threads)


def _ivf_of(index: faiss.Index):
    """The IndexIVF inside ``index`` (itself, or wrapped by a pre-transform / refine), or None."""
    return faiss.try_extract_index_ivf(index)


def _removable_ivf(index: faiss.Index) -> bool:
    """True if FAISS can add with our ids and remove by id: an IVF, maybe under a pre-transform."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIVF):
        return True
    if isinstance(top, faiss.IndexPreTransform):
        return isinstance(faiss.downcast_index(top.index), faiss.IndexIVF)
    return False


def _hnsw_of(index: faiss.Index):
    top = faiss.downcast_index(index)
    return top if isinstance(top, faiss.IndexHNSW) else None


def _ivf_nlist_for(n: int) -> int | None:
    """nlist of the "ivf" kind for n vectors, or None if n is too few to train even 64 lists."""
    if n <= 0:
        return None
    nlist = 2 ** round(math.log2(4.0 * math.sqrt(n)))
    nlist = min(IVF_MAX_NLIST, max(IVF_MIN_NLIST, nlist))
    while nlist > IVF_MIN_NLIST and nlist * MIN_POINTS_PER_LIST > n:
        nlist //= 2
    return nlist if nlist * MIN_POINTS_PER_LIST <= n else None


def _ivf_nprobe(nlist: int) -> int:
    return min(nlist, max(16, nlist // IVF_PROBE_DIVISOR))


def _train_minimum(index: faiss.Index) -> int:
    """Vectors needed before a (factory) index that needs training is trained."""
    if index.is_trained:
        return 0
    need = 1
    ivf = _ivf_of(index)
    if ivf is not None:
        need = max(need, ivf.nlist)
    for obj in (index, ivf):
        if obj is None:
            continue
        down = faiss.downcast_index(obj) if isinstance(obj, faiss.Index) else obj
        pq = getattr(down, "pq", None)
        if pq is not None:
            need = max(need, int(pq.ksub))
    return max(MIN_GENERIC_TRAIN, MIN_POINTS_PER_LIST * need)


#: Address space a trial load may use beyond the child's own, per byte of serialised FAISS index
#: (a loaded index is about as large as its serialised form; 4x leaves room for FAISS's buffers).
TRIAL_LOAD_FACTOR = 4
TRIAL_LOAD_SLACK = 256 * 1024**2

_TRIAL_LOADER = """
import resource, sys
import numpy as np
import faiss
data = sys.stdin.buffer.read()
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
limit = vm + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
faiss.deserialize_index(np.frombuffer(data, np.uint8))
"""


def _trial_load(blob: np.ndarray) -> None:
    """Load untrusted FAISS bytes once in a child process capped to a few times their size.

    FAISS's reader allocates whatever a length field claims before it finds the data missing,
    so a forged field could make the gate process allocate gigabytes for seconds. The child takes
    that hit instead; only bytes that load within the cap reach ``faiss.deserialize_index`` here.
    Linux only (``RLIMIT_AS``, ``/proc``); elsewhere the bytes are loaded directly.
    """
    if not sys.platform.startswith("linux"):
        return
    budget = TRIAL_LOAD_FACTOR * blob.size + TRIAL_LOAD_SLACK
    try:
        res = subprocess.run([sys.executable, "-c", _TRIAL_LOADER, str(budget)],
                             input=blob.tobytes(), capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _err(f"serialised VectorIndex: trial load of the FAISS index failed ({exc})") from None
    if res.returncode != 0:
        raise _err("serialised VectorIndex: the FAISS index does not load within "
                   f"{budget} bytes (corrupt or forged lengths)")


#: Largest number a factory string may hold: FAISS allocates an empty IVF's list table (and an
#: IMI's, 2^(2 x bits) lists) when the string is parsed, so "IVF20000000,Flat" took 3 GB before
#: any data. 65536 is IVF_MAX_NLIST; HNSW's M and PQ's sizes are far below it in practice.
FACTORY_MAX_NUMBER = IVF_MAX_NLIST


def _check_factory_sizes(spec: str) -> None:
    """Refuse factory strings whose sizes would make FAISS allocate large empty structures
    (a gallery file's kind is read from the file, so this guards loading too)."""
    if "IMI" in spec.upper():
        raise _err(f"kind {spec!r}: multi-index (IMI) quantisers are not supported")
    big = [int(x) for x in re.findall(r"\d+", spec) if int(x) > FACTORY_MAX_NUMBER]
    if big:
        raise _err(f"kind {spec!r}: {big[0]} exceeds {FACTORY_MAX_NUMBER}, the largest size a "
                   "factory string may give")


def _err(msg: str) -> InputError:
    return InputError(msg)


#: ``kind="auto"`` searches exactly up to this many vectors. At 10^6 templates (lfw-dev mates among
#: synthetic distractors, benchmarks/gallery_report.py) IVF-SQ8 found the mate at rank 1 for only
#: 0.93 of the probes the exact search got right, while the exact search takes ~20 ms on one core:
#: a missed traveller costs more than 18 ms, so approximate search is opt-in (``kind="ivf"``...).
AUTO_EXACT_UP_TO = 1_000_000


class VectorIndex:
    """Exact-score inner-product index over unit float32 vectors keyed by int64 ids.

    See the module docstring for kinds, training, removal, threads and serialisation.
    """

    def __init__(self, dim: int, kind: str = "auto", *, threads: int = 1,
                 auto_threshold: int = AUTO_EXACT_UP_TO) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not (
                1 <= dim <= _MAX_DIM):
            raise _err(f"dim must be an int in [1, {_MAX_DIM}], got {dim!r}")
        if not isinstance(kind, str) or not kind.strip():
            raise _err(f"kind must be 'auto', 'flat', 'hnsw', 'ivf' or a FAISS index-factory "
                       f"string, got {kind!r}")
        if isinstance(auto_threshold, bool) or not isinstance(auto_threshold, (int, np.integer)) \
                or auto_threshold < 1:
            raise _err(f"auto_threshold must be an int >= 1, got {auto_threshold!r}")
        self._dim = int(dim)
        self._kind = kind
        self._auto_threshold = int(auto_threshold)
        self._threads = 1
        self.threads = threads
        # Factory strings are validated by building them once (cheap: nothing is allocated for
        # data). Strings that would let FAISS own the ids are refused: the index maps ids itself.
        self._train_min = 0
        if kind not in NAMED_KINDS:
            if "IDMap" in kind:
                raise _err(f"kind {kind!r}: IDMap is not allowed, VectorIndex maps ids itself")
            _check_factory_sizes(kind)
            probe = self._factory(kind)
            self._train_min = _train_minimum(probe)
            del probe
        self._train_at = self._train_min  # next size at which training is attempted
        # Dense storage.
        self._n = 0
        self._mat = np.empty((0, self._dim), np.float32)
        self._ids = np.empty(0, np.int64)
        self._row_of: dict[int, int] = {}
        # FAISS state (None: exact flat search).
        self._faiss: faiss.Index | None = None
        self._spec: str | None = None  # "hnsw", "ivf" or the factory string of what is built
        self._labels_are_ids = False   # True: FAISS labels are our ids (IVF, remove_ids)
        self._hnsw = False             # True: SearchParametersHNSW (efSearch, selector)
        self._nlist = 0                # of the built "ivf"
        self._nprobe: int | None = None  # user override of the nprobe rule
        # Slot bookkeeping when labels are FAISS positions (non-removable indexes).
        self._nslots = 0
        self._row_slot = np.empty(0, np.int64)
        self._slot_row = np.empty(0, np.int64)   # -1: tombstone
        self._live_bits = np.empty(0, np.uint8)  # bit per slot, 1 = live

    # ------------------------------------------------------------------------------------------
    # Properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """The kind requested at construction."""
        return self._kind

    @property
    def kind_in_use(self) -> str:
        """What searches use now: "flat", "hnsw", "ivf" or the factory string."""
        return "flat" if self._faiss is None else str(self._spec)

    @property
    def auto_threshold(self) -> int:
        return self._auto_threshold

    @property
    def threads(self) -> int:
        """OpenMP threads FAISS may use per call (set before every FAISS call)."""
        return self._threads

    @threads.setter
    def threads(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise _err(f"threads must be an int >= 1, got {value!r}")
        self._threads = int(value)

    @property
    def nprobe(self) -> int | None:
        """IVF lists probed per search (None if no IVF is in use). Settable: the value then
        also applies to later rebuilds (capped at nlist); None restores the default rule."""
        ivf = _ivf_of(self._faiss) if self._faiss is not None else None
        return None if ivf is None else int(ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < 1):
            raise _err(f"nprobe must be an int >= 1 or None, got {value!r}")
        self._nprobe = None if value is None else int(value)
        ivf = _ivf_of(self._faiss) if self._faiss is not None else None
        if ivf is not None:
            ivf.nprobe = self._nprobe_for(ivf.nlist)

    def _nprobe_for(self, nlist: int) -> int:
        return min(nlist, self._nprobe) if self._nprobe is not None else _ivf_nprobe(nlist)

    @property
    def _uses_slots(self) -> bool:
        """FAISS labels are positions in the FAISS index (tombstone bookkeeping is live)."""
        return self._faiss is not None and not self._labels_are_ids

    @property
    def tombstones(self) -> int:
        """Removed vectors still present in a non-removable FAISS index (0 otherwise)."""
        if self._faiss is None or self._labels_are_ids:
            return 0
        return self._nslots - self._n

    def __len__(self) -> int:
        return self._n

    def __contains__(self, id_: object) -> bool:
        return self.contains(id_)

    def __repr__(self) -> str:
        return (f"VectorIndex(dim={self._dim}, kind={self._kind!r}, kind_in_use="
                f"{self.kind_in_use!r}, len={self._n})")

    # ------------------------------------------------------------------------------------------
    # Validation

    def _factory(self, spec: str) -> faiss.Index:
        try:
            _omp(self._threads)
            return faiss.index_factory(self._dim, spec, faiss.METRIC_INNER_PRODUCT)
        except MemoryError:
            raise _err(f"kind {spec!r}: FAISS could not allocate the empty index") from None
        except (RuntimeError, ValueError, TypeError) as e:  # FAISS: RuntimeError from its parser
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise _err(f"kind {spec!r} is not a valid FAISS index-factory string for dim "
                       f"{self._dim}: {msg}") from None

    @staticmethod
    def _as_ids(ids: object, name: str = "ids") -> np.ndarray:
        """ids as a 1-D int64 array (any integer dtype; values must fit in int64)."""
        if isinstance(ids, np.ndarray):
            arr = ids
        elif isinstance(ids, Iterable):
            arr = np.asarray(list(ids))
            if arr.size == 0:
                arr = arr.astype(np.int64)
        else:
            raise _err(f"{name} must be a 1-D integer numpy array, got {type(ids).__name__}")
        if arr.ndim != 1:
            raise _err(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            if arr.size == 0:
                return np.empty(0, np.int64)
            raise _err(f"{name} must have an integer dtype, got {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise _err(f"{name} has values above the int64 range")
        return arr.astype(np.int64, copy=False)

    def _check_queries(self, queries: object) -> np.ndarray:
        if not isinstance(queries, np.ndarray):
            raise _err(f"queries must be a float32 numpy array of shape (q, {self._dim}), got "
                       f"{type(queries).__name__}")
        if queries.dtype != np.float32:
            raise _err(f"queries must have dtype float32, got {queries.dtype}")
        if queries.ndim != 2 or queries.shape[1] != self._dim:
            raise _err(f"queries must have shape (q, {self._dim}), got {queries.shape}")
        if not queries.flags.c_contiguous:
            queries = np.ascontiguousarray(queries)
        return queries

    @staticmethod
    def _check_k(k: object) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise _err(f"k must be an int >= 1, got {k!r}")
        return int(k)

    # ------------------------------------------------------------------------------------------
    # Queries of the stored set

    def contains(self, id_: object) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)):
            raise _err(f"id must be an int, got {type(id_).__name__}")
        return int(id_) in self._row_of

    def ids(self) -> np.ndarray:
        """All ids, in storage (row) order (a copy)."""
        return self._ids[: self._n].copy()

    def vectors_of(self, ids: object) -> np.ndarray:
        """float32 (len(ids), dim): the stored vector of each id (a copy). Unknown id: InputError."""
        arr = self._as_ids(ids)
        rows = np.empty(arr.size, np.int64)
        row_of = self._row_of
        for j, i in enumerate(arr.tolist()):
            r = row_of.get(i)
            if r is None:
                raise _err(f"id {i} is not in the index")
            rows[j] = r
        return self._mat[rows]

    def memory_bytes(self) -> int:
        """Approximate resident bytes: dense matrix (capacity), id arrays and map, FAISS index."""
        total = self._mat.nbytes + self._ids.nbytes
        total += sys.getsizeof(self._row_of) + 2 * _PYINT_BYTES * self._n
        total += self._row_slot.nbytes + self._slot_row.nbytes + self._live_bits.nbytes
        return total + self._faiss_bytes()

    def _faiss_bytes(self) -> int:
        idx = self._faiss
        if idx is None:
            return 0
        ivf = _ivf_of(idx)
        if ivf is not None:
            quant = ivf.quantizer.ntotal * self._dim * 4
            return int(ivf.ntotal * (ivf.code_size + 8) + quant)
        h = _hnsw_of(idx)
        if h is not None:
            g = h.hnsw
            storage = faiss.downcast_index(h.storage)
            code = getattr(storage, "code_size", 4 * self._dim)
            return int(h.ntotal * code + g.neighbors.size() * 4 + g.offsets.size() * 8
                       + g.levels.size() * 4)
        _omp(self._threads)
        return int(faiss.serialize_index(idx).size)

    # ------------------------------------------------------------------------------------------
    # Add / remove

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors (n, dim) float32 of unit norm (not normalised here) under new ids.

        Raises InputError (and changes nothing) for: a wrong type / dtype / shape, an id
        repeated in the call or already present, id -1 (reserved as "no result"), a NaN or
        infinity, or a norm off 1 by more than 1e-3.
        """
        if not isinstance(ids, np.ndarray):
            raise _err(f"ids must be a 1-D int64 numpy array, got {type(ids).__name__}")
        ids64 = self._as_ids(ids)
        if not isinstance(vectors, np.ndarray):
            raise _err(f"vectors must be a float32 numpy array of shape (n, {self._dim}), got "
                       f"{type(vectors).__name__}")
        if vectors.dtype != np.float32:
            raise _err(f"vectors must have dtype float32, got {vectors.dtype}")
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise _err(f"vectors must have shape (n, {self._dim}), got {vectors.shape}")
        m = ids64.size
        if vectors.shape[0] != m:
            raise _err(f"ids has {m} entries but vectors has {vectors.shape[0]} rows")
        if m == 0:
            return
        if not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise _err(f"vectors row {bad} (id {int(ids64[bad])}) contains NaN or infinity")
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            bad = int(np.flatnonzero(off)[0])
            raise _err(f"vectors must have unit norm (within {NORM_TOLERANCE}): row {bad} (id "
                       f"{int(ids64[bad])}) has norm {norms[bad]:.6g}")
        uniq, counts = np.unique(ids64, return_counts=True)
        if uniq.size != m:
            raise _err(f"id {int(uniq[counts > 1][0])} appears more than once in ids")
        id_list = ids64.tolist()
        row_of = self._row_of
        for i in id_list:
            if i in row_of:
                raise _err(f"id {i} is already in the index")
        if (uniq == -1).any():
            raise _err("id -1 is reserved (it pads search results)")

        n0 = self._n
        self._reserve(n0 + m)
        self._mat[n0: n0 + m] = vectors
        self._ids[n0: n0 + m] = ids64
        row_of.update(zip(id_list, range(n0, n0 + m)))
        self._n = n0 + m
        try:
            if self._faiss is not None:
                self._faiss_add(n0, n0 + m)
        except BaseException:
            for i in id_list:
                del row_of[i]
            self._n = n0
            raise
        try:
            self._after_resize()  # may (re)build FAISS: slow, can run out of memory or be interrupted
        except BaseException:
            self.remove(ids64)  # all or nothing: the caller sees the error, so no row may stay
            raise

    def remove(self, ids: object) -> int:
        """Removes the given ids (unknown ids are ignored); returns how many were removed."""
        arr = np.unique(self._as_ids(ids))
        row_of = self._row_of
        rows = [row_of[i] for i in arr.tolist() if i in row_of]
        if not rows:
            return 0
        gone_rows = np.array(rows, np.int64)
        gone_ids = self._ids[gone_rows].copy()
        m = gone_rows.size
        if self._faiss is not None:
            if self._labels_are_ids:
                _omp(self._threads)
                self._faiss.remove_ids(gone_ids)
            else:
                slots = self._row_slot[gone_rows]
                self._slot_row[slots] = -1
                np.bitwise_and.at(self._live_bits, slots >> 3,
                                  (~(1 << (slots & 7))).astype(np.uint8))
        for i in gone_ids.tolist():
            del row_of[i]
        # Keep the matrix dense: rows removed from the tail region simply drop off, and each
        # hole below it takes one surviving row from the tail (the "swap the last row in" rule,
        # done for the whole batch at once).
        new_n = self._n - m
        holes = np.sort(gone_rows[gone_rows < new_n])
        tail = np.ones(m, bool)  # rows new_n .. n - 1 that survive
        tail[gone_rows[gone_rows >= new_n] - new_n] = False
        movers = new_n + np.flatnonzero(tail)
        if holes.size:
            self._mat[holes] = self._mat[movers]
            self._ids[holes] = self._ids[movers]
            for i, r in zip(self._ids[holes].tolist(), holes.tolist()):
                row_of[i] = r
            if self._uses_slots:
                self._row_slot[holes] = self._row_slot[movers]
                self._slot_row[self._row_slot[holes]] = holes
        self._n = new_n
        self._after_remove()
        return m

    def _reserve(self, need: int) -> None:
        cap = self._mat.shape[0]
        if need <= cap:
            return
        new_cap = max(need, 2 * cap, 16)
        mat = np.empty((new_cap, self._dim), np.float32)
        mat[: self._n] = self._mat[: self._n]
        ids = np.empty(new_cap, np.int64)
        ids[: self._n] = self._ids[: self._n]
        self._mat, self._ids = mat, ids
        if self._uses_slots:
            rs = np.zeros(new_cap, np.int64)
            rs[: self._n] = self._row_slot[: self._n]
            self._row_slot = rs

    # ------------------------------------------------------------------------------------------
    # FAISS lifecycle

    def _wanted_spec(self) -> str | None:
        """What should be built now that there are self._n vectors (None: stay flat)."""
        n, kind = self._n, self._kind
        if kind == "flat":
            return None
        if kind == "hnsw":
            return "hnsw"
        if kind == "ivf":
            return "ivf" if _ivf_nlist_for(n) is not None else None
        if kind == "auto":
            if n > self._auto_threshold and _ivf_nlist_for(n) is not None:
                return "ivf"
            return None
        return kind if n >= self._train_at else None

    def _after_resize(self) -> None:
        if self._faiss is None:
            spec = self._wanted_spec()
            if spec is not None:
                self._build(spec)
        elif self._spec == "ivf":
            ideal = _ivf_nlist_for(self._n)
            if ideal is not None and ideal >= 4 * self._nlist:
                self._build("ivf")

    def _after_remove(self) -> None:
        if self._faiss is None:
            return
        if self._kind == "auto" and self._n < self._auto_threshold / 2:
            self._drop_faiss()
            return
        if not self._labels_are_ids and self.tombstones > TOMBSTONE_REBUILD_FRACTION * max(
                1, self._nslots):
            self._rebuild_slots()

    def _drop_faiss(self) -> None:
        self._faiss = None
        self._spec = None
        self._labels_are_ids = False
        self._hnsw = False
        self._nlist = 0
        self._nslots = 0
        self._row_slot = np.empty(0, np.int64)
        self._slot_row = np.empty(0, np.int64)
        self._live_bits = np.empty(0, np.uint8)

    def _new_index(self, spec: str) -> faiss.Index:
        n = self._n
        if spec == "hnsw":
            idx = faiss.IndexHNSWFlat(self._dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            return idx
        if spec == "ivf":
            nlist = _ivf_nlist_for(n)
            assert nlist is not None
            idx = self._factory(f"IVF{nlist},SQ8")
        else:
            idx = self._factory(spec)
        ivf = _ivf_of(idx)
        if ivf is not None:
            ivf.cp.seed = SEED
            ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            ivf.nprobe = self._nprobe_for(ivf.nlist)
        return idx

    def _new_index_type(self, spec: str) -> faiss.Index:
        """An empty index of the type `spec` builds (for type checks when loading)."""
        if spec == "hnsw":
            return faiss.IndexHNSWFlat(self._dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        if spec == "ivf":
            return self._factory(f"IVF{IVF_MIN_NLIST},SQ8")
        return self._factory(spec)

    def _training_sample(self, index: faiss.Index) -> np.ndarray:
        n = self._n
        ivf = _ivf_of(index)
        cap = max(TRAIN_POINTS_PER_LIST * ivf.nlist, 50_000) if ivf is not None else 200_000
        if n <= cap:
            return self._mat[:n]
        rows = np.sort(np.random.default_rng(SEED).choice(n, cap, replace=False))
        return self._mat[rows]

    def _build(self, spec: str) -> None:
        """(Re)builds the FAISS index `spec` over all current vectors (training it if needed)."""
        idx = self._new_index(spec)
        _omp(self._threads)
        if not idx.is_trained:
            try:
                idx.train(self._training_sample(idx))
            except RuntimeError as e:
                self._train_at = 2 * max(self._n, 1)
                warnings.warn(f"VectorIndex: FAISS could not train {spec!r} on {self._n} "
                              f"vectors ({str(e).strip().splitlines()[-1]}); searching flat "
                              f"until {self._train_at}", RuntimeWarning, stacklevel=3)
                return
        self._drop_faiss()
        self._labels_are_ids = _removable_ivf(idx)
        self._hnsw = _hnsw_of(idx) is not None
        self._spec = spec
        self._nlist = _ivf_of(idx).nlist if _ivf_of(idx) is not None else 0
        self._faiss = idx
        if self._uses_slots:
            self._row_slot = np.zeros(self._mat.shape[0], np.int64)
        try:
            self._faiss_add(0, self._n)
        except BaseException:
            self._drop_faiss()
            raise

    def _rebuild_slots(self) -> None:
        """Rebuilds a non-removable index from the dense matrix (drops every tombstone)."""
        idx = self._faiss
        assert idx is not None
        _omp(self._threads)
        idx.reset()
        self._nslots = 0
        self._slot_row = np.empty(0, np.int64)
        self._live_bits = np.empty(0, np.uint8)
        self._faiss_add(0, self._n)

    def _faiss_add(self, r0: int, r1: int) -> None:
        """Adds rows [r0, r1) of the dense matrix to the FAISS index."""
        idx = self._faiss
        assert idx is not None
        if r1 <= r0:
            return
        x = self._mat[r0:r1]
        _omp(self._threads)
        if self._labels_are_ids:
            idx.add_with_ids(x, self._ids[r0:r1])
            return
        s0 = self._nslots
        idx.add(x)
        s1 = s0 + (r1 - r0)
        if idx.ntotal != s1:  # pragma: no cover - FAISS contract
            raise RuntimeError(f"FAISS index has {idx.ntotal} entries, expected {s1}")
        if self._slot_row.size < s1:
            grown = np.full(max(s1, 2 * self._slot_row.size, 16), -1, np.int64)
            grown[: s0] = self._slot_row[: s0]
            self._slot_row = grown
            bits = np.zeros((grown.size + 7) // 8, np.uint8)
            bits[: self._live_bits.size] = self._live_bits
            self._live_bits = bits
        rows = np.arange(r0, r1, dtype=np.int64)
        slots = np.arange(s0, s1, dtype=np.int64)
        self._slot_row[s0:s1] = rows
        self._row_slot[r0:r1] = slots
        np.bitwise_or.at(self._live_bits, slots >> 3, (1 << (slots & 7)).astype(np.uint8))
        self._nslots = s1

    # ------------------------------------------------------------------------------------------
    # Search

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores float32 (q, k), ids int64 (q, k)), best first.

        queries: float32 (q, dim), finite (not required to be unit norm). Scores are exact
        (the native float32 kernel). When fewer than k vectors are found the rows are padded
        with id -1 and score -inf. Equal scores are ordered by storage row (arbitrary but
        deterministic for a given index state).
        """
        q = self._check_queries(queries)
        k = self._check_k(k)
        n = self._n
        nq = q.shape[0]
        if self._faiss is None or n == 0:
            try:
                if n == 0:
                    if not np.isfinite(q).all():
                        raise ValueError("queries contain NaN or infinity")
                    return (np.full((nq, k), -np.inf, np.float32),
                            np.full((nq, k), -1, np.int64))
                scores, rows = _native.topk_ip(self._mat[:n], q, k)
            except ValueError:
                raise _err("queries contain NaN or infinity") from None
            ids = self._ids[rows]
            if rows.shape[1] < k:
                return self._pad(scores, ids, k)
            return scores, ids
        if not np.isfinite(q).all():
            raise _err("queries contain NaN or infinity")
        return self._search_faiss(q, k)

    @staticmethod
    def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq, kk = ids.shape
        s = np.full((nq, k), -np.inf, np.float32)
        i = np.full((nq, k), -1, np.int64)
        s[:, :kk] = scores
        i[:, :kk] = ids
        return s, i

    def _labels_to_rows(self, labels: np.ndarray) -> np.ndarray:
        """FAISS labels (q, kc) -> dense rows, -1 for padding / removed / unknown."""
        if self._labels_are_ids:
            get = self._row_of.get
            flat = labels.ravel().tolist()
            rows = np.fromiter((get(x, -1) for x in flat), np.int64, count=len(flat))
            return rows.reshape(labels.shape)
        rows = np.full(labels.shape, -1, np.int64)
        ok = (labels >= 0) & (labels < self._nslots)
        rows[ok] = self._slot_row[labels[ok]]
        return rows

    def _search_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._faiss
        assert idx is not None
        n = self._n
        kc = max(CANDIDATE_FACTOR * k, MIN_CANDIDATES)
        dead = self.tombstones
        params = None
        kf = kc
        if self._hnsw:
            if dead:
                sel = faiss.IDSelectorBitmap(self._live_bits[: (self._nslots + 7) // 8])
                params = faiss.SearchParametersHNSW(efSearch=max(HNSW_MIN_EF_SEARCH, 2 * kc),
                                                    sel=sel)
            else:
                params = faiss.SearchParametersHNSW(efSearch=max(HNSW_MIN_EF_SEARCH, 2 * kc))
        elif dead:
            kf = min(idx.ntotal, 2 * kc)
        while True:
            _omp(self._threads)
            _, labels = idx.search(q, kf, params=params)
            rows = self._labels_to_rows(labels)
            if not dead or self._hnsw or kf >= idx.ntotal:
                break
            if ((rows >= 0).sum(axis=1) >= min(kc, n)).all():
                break
            kf = min(idx.ntotal, 2 * kf)  # over-fetch past the tombstones
        return self._rescore(q, rows, k)

    def _rescore(self, q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq = q.shape[0]
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_i = np.full((nq, k), -1, np.int64)
        mat = self._mat
        for qi in range(nq):
            r = rows[qi]
            r = np.unique(r[r >= 0])  # sorted: ties below are broken by lower row
            if r.size == 0:
                continue
            s = _native.dot_batch(mat[r], q[qi: qi + 1])[0]
            order = np.argsort(-s, kind="stable")[:k]
            out_s[qi, : order.size] = s[order]
            out_i[qi, : order.size] = self._ids[r[order]]
        return out_s, out_i

    # ------------------------------------------------------------------------------------------
    # Serialisation

    def to_bytes(self) -> bytes:
        """The whole index (dims, kind, ids, vectors, FAISS index) as bytes; see from_bytes."""
        n = self._n
        parts = [
            _MAGIC,
            struct.pack("<HHIQQ", _VERSION, 0, self._dim, self._auto_threshold, n),
        ]
        for text in (self._kind, self._spec or ""):
            raw = text.encode("utf-8")
            parts.append(struct.pack("<H", len(raw)))
            parts.append(raw)
        parts.append(self._ids[:n].astype("<i8", copy=False).tobytes())
        parts.append(self._mat[:n].astype("<f4", copy=False).tobytes())
        if self._faiss is not None:
            parts.append(struct.pack("<B", 1 if self._labels_are_ids else 0))
            if not self._labels_are_ids:
                parts.append(struct.pack("<Q", self._nslots))
                parts.append(self._row_slot[:n].astype("<i8", copy=False).tobytes())
            _omp(self._threads)
            blob = faiss.serialize_index(self._faiss)
            parts.append(struct.pack("<Q", blob.size))
            parts.append(memoryview(blob))
        h = hashlib.blake2b(digest_size=_DIGEST)
        for p in parts:
            h.update(p)
        parts.append(h.digest())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, threads: int = 1) -> VectorIndex:
        """Rebuilds an index written by to_bytes. Malformed bytes raise InputError."""
        try:
            buf = memoryview(data).cast("B")
        except TypeError:
            raise _err(f"index bytes must be bytes-like, got {type(data).__name__}") from None
        if len(buf) < len(_MAGIC) + 24 + 4 + _DIGEST or bytes(buf[:4]) != _MAGIC:
            raise _err("not a serialised VectorIndex (bad magic or too short)")
        body, digest = buf[:-_DIGEST], bytes(buf[-_DIGEST:])
        if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
            raise _err("serialised VectorIndex is corrupt or truncated (digest mismatch)")
        return _Reader(body, threads).read()


class _Reader:
    """Parses to_bytes output (digest already checked) with every length bounds-checked."""

    def __init__(self, body: memoryview, threads: int) -> None:
        self.buf = body
        self.pos = 4
        self.threads = threads

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or size > len(self.buf) - self.pos:
            raise _err(f"serialised VectorIndex is truncated (reading {what})")
        out = self.buf[self.pos: self.pos + size]
        self.pos += size
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def text(self, what: str) -> str:
        (size,) = self.unpack("<H", what)
        try:
            return bytes(self.take(size, what)).decode("utf-8")
        except UnicodeDecodeError:
            raise _err(f"serialised VectorIndex: {what} is not UTF-8") from None

    def read(self) -> VectorIndex:
        version, flags, dim, auto_threshold, n = self.unpack("<HHIQQ", "header")
        if version != _VERSION:
            raise _err(f"serialised VectorIndex has unsupported version {version}")
        if flags != 0:
            raise _err(f"serialised VectorIndex has unknown flags {flags:#x}")
        if not 1 <= dim <= _MAX_DIM or auto_threshold < 1:
            raise _err("serialised VectorIndex has an invalid header")
        kind = self.text("kind")
        spec = self.text("faiss spec")
        if n > (len(self.buf) - self.pos) // (8 + 4 * dim):
            raise _err("serialised VectorIndex is truncated (fewer vectors than its header says)")
        idx = VectorIndex(dim, kind, threads=self.threads, auto_threshold=auto_threshold)
        ids = np.frombuffer(self.take(8 * n, "ids"), "<i8").astype(np.int64)
        mat = np.frombuffer(self.take(4 * n * dim, "vectors"), "<f4").astype(np.float32)
        mat = mat.reshape(n, dim)
        if n:
            if np.unique(ids).size != n or (ids == -1).any():
                raise _err("serialised VectorIndex has duplicate or reserved ids")
            if not np.isfinite(mat).all():
                raise _err("serialised VectorIndex has non-finite vectors")
            norms = np.sqrt(np.einsum("ij,ij->i", mat, mat, dtype=np.float64))
            if (np.abs(norms - 1.0) > NORM_TOLERANCE).any():
                raise _err("serialised VectorIndex has vectors that are not unit norm")
        idx._mat = mat if mat.flags.writeable else mat.copy()
        idx._ids = ids
        idx._n = n
        idx._row_of = dict(zip(ids.tolist(), range(n)))
        if spec:
            self.read_faiss(idx, spec)
        if self.pos != len(self.buf):
            raise _err("serialised VectorIndex has trailing bytes")
        return idx

    def read_faiss(self, idx: VectorIndex, spec: str) -> None:
        n, dim = idx._n, idx._dim
        if spec not in ("hnsw", "ivf") and spec != idx._kind:
            raise _err(f"serialised VectorIndex: FAISS spec {spec!r} does not match its kind")
        if spec == "ivf" and idx._kind not in ("ivf", "auto"):
            raise _err(f"serialised VectorIndex: an 'ivf' index under kind {idx._kind!r}")
        if spec == "hnsw" and idx._kind != "hnsw":
            raise _err(f"serialised VectorIndex: an 'hnsw' index under kind {idx._kind!r}")
        (by_id,) = self.unpack("<B", "FAISS label mode")
        if by_id not in (0, 1):
            raise _err("serialised VectorIndex has an invalid FAISS label mode")
        nslots = n
        row_slot = None
        if not by_id:
            (nslots,) = self.unpack("<Q", "slot count")
            if nslots < n or nslots > 1 << 40:
                raise _err("serialised VectorIndex has an invalid slot count")
            row_slot = np.frombuffer(self.take(8 * n, "slots"), "<i8").astype(np.int64)
            if n and (row_slot.min() < 0 or row_slot.max() >= nslots
                      or np.unique(row_slot).size != n):
                raise _err("serialised VectorIndex has invalid slots")
        (size,) = self.unpack("<Q", "FAISS length")
        blob = np.frombuffer(self.take(size, "FAISS index"), np.uint8)
        _trial_load(blob)
        try:
            _omp(idx._threads)
            index = faiss.deserialize_index(blob)
        except (RuntimeError, MemoryError, ValueError) as e:
            raise _err(f"serialised VectorIndex: the FAISS index does not load "
                       f"({type(e).__name__})") from None
        # The loaded index must be what the spec builds, over exactly our vectors.
        # (compared after a round trip: FAISS may load a subclass, e.g. IndexFlat as IndexFlatIP)
        empty = idx._new_index_type(spec)
        expect = type(faiss.downcast_index(faiss.deserialize_index(faiss.serialize_index(empty))))
        got = faiss.downcast_index(index)
        if type(got) is not expect:
            raise _err(f"serialised VectorIndex: FAISS index is {type(got).__name__}, "
                       f"expected {expect.__name__}")
        if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise _err("serialised VectorIndex: FAISS index dimension or metric mismatch")
        if bool(by_id) != _removable_ivf(index) or not index.is_trained:
            raise _err("serialised VectorIndex: FAISS index state mismatch")
        if index.ntotal != nslots:
            raise _err(f"serialised VectorIndex: FAISS index holds {index.ntotal} vectors, "
                       f"expected {nslots}")
        _check_ivf(index, idx._ids[:n] if by_id else None)
        _check_hnsw(index)
        idx._faiss = index
        idx._spec = spec
        idx._labels_are_ids = bool(by_id)
        idx._hnsw = _hnsw_of(index) is not None
        ivf = _ivf_of(index)
        idx._nlist = ivf.nlist if ivf is not None else 0
        if ivf is not None:
            if not 1 <= ivf.nprobe <= ivf.nlist:
                raise _err("serialised VectorIndex: IVF nprobe out of range")
            if ivf.nprobe != _ivf_nprobe(ivf.nlist):
                idx._nprobe = int(ivf.nprobe)
        if not by_id:
            assert row_slot is not None
            idx._row_slot = row_slot
            idx._nslots = int(nslots)
            idx._slot_row = np.full(max(int(nslots), 1), -1, np.int64)
            idx._slot_row[row_slot] = np.arange(n, dtype=np.int64)
            idx._live_bits = np.zeros((idx._slot_row.size + 7) // 8, np.uint8)
            if n:
                np.bitwise_or.at(idx._live_bits, row_slot >> 3,
                                 (1 << (row_slot & 7)).astype(np.uint8))


def _check_ivf(index: faiss.Index, ids: np.ndarray | None) -> None:
    """An IVF's coarse quantizer and inverted lists must be consistent with our ids."""
    ivf = _ivf_of(index)
    if ivf is None:
        return
    if ivf.quantizer is None or ivf.quantizer.ntotal != ivf.nlist or ivf.quantizer.d != ivf.d:
        raise _err("serialised VectorIndex: IVF coarse quantizer does not match its lists")
    inv = ivf.invlists
    if inv is None or inv.nlist != ivf.nlist:
        raise _err("serialised VectorIndex: IVF inverted lists missing or mis-sized")
    sizes = [inv.list_size(i) for i in range(ivf.nlist)]
    if sum(sizes) != ivf.ntotal:
        raise _err("serialised VectorIndex: IVF list sizes do not add up")
    if ids is None:
        return
    got = np.empty(ivf.ntotal, np.int64)
    pos = 0
    for i, s in enumerate(sizes):
        if s:
            got[pos: pos + s] = faiss.rev_swig_ptr(inv.get_ids(i), s)
            pos += s
    if not np.array_equal(np.sort(got), np.sort(ids)):
        raise _err("serialised VectorIndex: IVF ids do not match the stored ids")


def _check_hnsw(index: faiss.Index) -> None:
    """An HNSW graph must only reference existing nodes, with consistent per-node offsets."""
    h = _hnsw_of(index)
    if h is None:
        return
    g = h.hnsw
    n = h.ntotal
    if h.storage is None or h.storage.ntotal != n:
        raise _err("serialised VectorIndex: HNSW storage size mismatch")
    levels = faiss.rev_swig_ptr(g.levels.data(), g.levels.size()) if g.levels.size() else \
        np.empty(0, np.int32)
    offsets = faiss.rev_swig_ptr(g.offsets.data(), g.offsets.size())
    cum = faiss.vector_to_array(g.cum_nneighbor_per_level).astype(np.int64)
    nb_size = g.neighbors.size()
    if levels.size != n or offsets.size != n + 1 or offsets[0] != 0:
        raise _err("serialised VectorIndex: HNSW graph arrays are mis-sized")
    if n:
        if levels.min() < 1 or levels.max() >= cum.size:
            raise _err("serialised VectorIndex: HNSW node levels out of range")
        if not np.array_equal(np.diff(offsets.astype(np.int64)), cum[levels]) or \
                int(offsets[-1]) != nb_size:
            raise _err("serialised VectorIndex: HNSW neighbour offsets are inconsistent")
        if not (0 <= g.entry_point < n) or g.max_level != int(levels.max()) - 1:
            raise _err("serialised VectorIndex: HNSW entry point or level out of range")
        nb = faiss.rev_swig_ptr(g.neighbors.data(), nb_size)
        if nb_size and (nb.min() < -1 or nb.max() >= n):
            raise _err("serialised VectorIndex: HNSW neighbours out of range")
    elif nb_size or g.entry_point != -1:
        raise _err("serialised VectorIndex: empty HNSW graph with neighbours")
