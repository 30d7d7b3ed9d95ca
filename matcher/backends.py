"""Inference backends: one small runner class per runtime, each safe to call from many threads.

A runner takes ``{input name: float32 array}`` and returns ``{output name: float32 array}``.
``onnxruntime`` is always available; ``openvino`` reads the same ONNX files and is faster on CPUs
with AVX-512 / AMX (measured in benchmarks/, figures in README.md).
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import os
import queue
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from matcher.errors import InputError, ModelError

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")


class Runner(Protocol):
    backend: str
    precision: str
    threads: int

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def available_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@functools.cache
def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def _ov_core():  # one Core per process: it only holds plugin handles and device properties
    import openvino as ov

    return ov.Core()


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when OpenVINO's CPU plugin reports native bf16 (AVX512_BF16 or AMX)."""
    if not openvino_installed():
        return False
    caps = _ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps


def resolve(backend: str, precision: str) -> dict[str, tuple[str, str]]:
    """Concrete ``{"detector": (backend, precision), "recognizer": (backend, precision)}``.

    ``"auto"`` picks what measured fastest here without costing accuracy (README, "Backends and
    precision"): the detector runs fp32 on ONNX Runtime (faster than OpenVINO for YuNet's small
    inputs, and bf16 moves YuNet's landmarks by up to 6 px); the recogniser runs on OpenVINO, in
    bf16 where the CPU has it natively (templates within cosine 0.999 of fp32). ``precision``
    applies to the recogniser only.
    """
    if backend not in ("auto", *BACKENDS):
        raise InputError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if precision not in ("auto", *PRECISIONS):
        raise InputError(f"precision must be 'auto' or one of {PRECISIONS}, got {precision!r}")
    if backend == "openvino" and not openvino_installed():
        raise ModelError("backend 'openvino' needs the openvino package: pip install openvino")
    rec_backend = backend
    if backend == "auto":
        rec_backend = "openvino" if openvino_installed() else "onnxruntime"
    det_backend = "onnxruntime" if backend == "auto" else backend
    if precision == "auto":
        precision = "bf16" if rec_backend == "openvino" and cpu_supports_bf16() else "fp32"
    if precision == "bf16" and rec_backend != "openvino":
        raise InputError("bf16 inference is offered by the openvino backend only")
    if precision == "bf16" and not cpu_supports_bf16():
        raise InputError("this CPU has no native bf16 support (AVX512_BF16 or AMX)")
    return {"detector": (det_backend, "fp32"), "recognizer": (rec_backend, precision)}


def make_runner(path: Path, backend: str, precision: str, threads: int,
                static_shapes: bool = False, streams: int = 1) -> Runner:
    """Create a runner for the prepared ONNX file ``path``.

    ``threads`` in all, split over ``streams`` requests that may run side by side (each with
    ``threads // streams``). ``static_shapes`` (OpenVINO only) compiles one network per input
    shape seen (LRU-cached), which is faster for the fully convolutional detector whose input
    size follows the frame.
    """
    if threads < 1 or not 1 <= streams <= threads:
        raise InputError(f"need threads >= streams >= 1, got threads={threads}, streams={streams}")
    if backend == "onnxruntime":
        # ONNX Runtime runs concurrent calls side by side anyway: size each call's share.
        return OnnxRuntimeRunner(path, threads // streams)
    if backend == "openvino":
        return OpenVinoRunner(path, threads, precision, static_shapes=static_shapes,
                              streams=streams)
    raise InputError(f"unknown backend {backend!r}")


class OnnxRuntimeRunner:
    """ONNX Runtime CPU session (``InferenceSession.run`` is thread-safe)."""

    backend = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        self.threads = threads
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # Idle intra-op threads otherwise spin for a while after each run, taking the cores from
        # whatever runs next (the OpenVINO recogniser, another gate's request).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise ModelError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._session.run(self.output_names, feed)
        return dict(zip(self.output_names, outs))


class OpenVinoRunner:
    """OpenVINO CPU runner: compiled network(s) plus a pool of infer requests for concurrent calls."""

    backend = "openvino"
    MAX_SHAPES = 8

    def __init__(self, path: Path, threads: int, precision: str, static_shapes: bool,
                 streams: int = 1) -> None:
        self.threads = threads
        self.streams = streams
        self.precision = precision
        self._static = static_shapes
        self._config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            # threads in all, split over the streams; one stream runs one request at a time.
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": streams,
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            # Gate processes run several engines side by side: do not pin threads to cores.
            "ENABLE_CPU_PINNING": False,
        }
        try:
            self._model = _ov_core().read_model(str(path))
        except Exception as exc:  # openvino raises RuntimeError subclasses
            raise ModelError(f"openvino cannot read {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._compiled: collections.OrderedDict = collections.OrderedDict()
        self.output_names = [o.get_any_name() for o in self._model.outputs]
        self._input_name = self._model.inputs[0].get_any_name()

    def _pool(self, shape: tuple[int, ...]):
        key = shape if self._static else None
        with self._lock:
            entry = self._compiled.get(key)
            if entry is not None:
                self._compiled.move_to_end(key)
                return entry
        model = self._model.clone() if self._static else self._model
        if self._static:
            model.reshape({self._input_name: list(shape)})
        try:
            compiled = _ov_core().compile_model(model, "CPU", self._config)
        except Exception as exc:
            raise ModelError(f"openvino cannot compile for input {shape}: {exc}") from exc
        entry = (compiled, queue.SimpleQueue())
        with self._lock:
            entry = self._compiled.setdefault(key, entry)
            while len(self._compiled) > self.MAX_SHAPES:
                self._compiled.popitem(last=False)
        return entry

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ((_, x),) = feed.items()
        compiled, pool = self._pool(tuple(x.shape))
        try:
            req = pool.get_nowait()
        except queue.Empty:
            req = compiled.create_infer_request()
        try:
            res = req.infer({0: x})
            # Output tensors belong to the request: copy before handing it back.
            return {n: np.array(res[i], copy=True) for i, n in enumerate(self.output_names)}
        finally:
            pool.put(req)
