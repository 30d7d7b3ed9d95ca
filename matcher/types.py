"""The values the public API hands out: detected faces and biometric templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from matcher._pair import PackedVector, cosine
from matcher.errors import ModelMismatchError, TemplateError

#: Unit-length tolerance for template vectors (float32 rounding of a normalised 128-d vector is
#: ~1e-7; float16 storage is ~1e-3).
UNIT_TOLERANCE = 1e-2
#: Vectors this close to unit length are kept as given (renormalising them in float32 would only
#: move bits, breaking lossless round trips).
EXACT_UNIT = 1e-6


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel frame of the image it was found in.

    ``box`` is ``(x, y, w, h)``; ``landmarks`` is a ``(5, 2)`` float32 array of the subject's
    right eye, left eye, nose tip, right and left mouth corners; ``score`` is in [0, 1].
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return max(self.box[2], 0.0) * max(self.box[3], 0.0)

    @property
    def inter_eye_distance(self) -> float:
        """Distance between the two eye landmarks, in pixels."""
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))


@dataclass(frozen=True, eq=False)
class Template:
    """A biometric template: a unit-length embedding bound to the model that made it.

    ``model`` is the model id (e.g. ``"sface-2021dec"``); ``model_hash`` fingerprints the exact
    model files and pre-processing, so templates from different pipelines never compare.
    """

    vector: np.ndarray
    model: str
    model_hash: str
    _packed: PackedVector = field(init=False, repr=False, compare=False)
    _key: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not isinstance(self.model_hash, str) \
                or not self.model or not self.model_hash:
            raise TemplateError("a template needs a model id and a model hash (strings)")
        try:
            v = np.array(self.vector, dtype=np.float32, copy=True)
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"template vector is not numeric: {exc}") from None
        if v.ndim != 1 or v.size == 0:
            raise TemplateError(f"template vector must be 1-D and non-empty, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise TemplateError("template vector has NaN or infinite values")
        norm = float(np.linalg.norm(v.astype(np.float64)))
        if abs(norm - 1.0) > UNIT_TOLERANCE:
            raise TemplateError(f"template vector must have unit length, got norm {norm:.6f}")
        if abs(norm - 1.0) > EXACT_UNIT:
            v /= np.float32(norm)
        v.setflags(write=False)
        object.__setattr__(self, "vector", v)
        object.__setattr__(self, "_packed", PackedVector(v))
        object.__setattr__(self, "_key", (self.model, self.model_hash))

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray, str, str]]:
        """Pickle as (vector, model, model_hash): the packed form is rebuilt, the vector is kept
        bit for bit (it is unit already), so a Template sent to another process (a Ray shard,
        a worker) scores exactly as here."""
        return (Template, (self.vector, self.model, self.model_hash))

    def check_compatible(self, other: Template) -> None:
        """Raise :class:`ModelMismatchError` unless ``other`` comes from the same model."""
        if self._key != other._key or self._packed.size != other._packed.size:
            raise ModelMismatchError(
                f"templates come from different models: {self.model}#{self.model_hash[:12]} "
                f"vs {other.model}#{other.model_hash[:12]}"
            )

    def similarity(self, other: Template) -> float:
        """Cosine similarity in [-1, 1]; raises :class:`ModelMismatchError` across models."""
        self.check_compatible(other)
        return cosine(self._packed, other._packed)

    def to_bytes(self, encoding: str = "f32") -> bytes:
        """Portable binary form (see :mod:`matcher.template_format`): ``"f32"`` (lossless),
        ``"f16"`` or ``"int8"`` (160 bytes for a 128-d SFace template)."""
        from matcher.template_format import encode

        return encode(self, encoding)

    @classmethod
    def from_bytes(cls, data: bytes) -> Template:
        """Parse :meth:`to_bytes` output; corrupt bytes raise
        :class:`~matcher.errors.TemplateFormatError`."""
        from matcher.template_format import decode

        return decode(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (self.model, self.model_hash) == (other.model, other.model_hash) and bool(
            np.array_equal(self.vector, other.vector)
        )

    def __hash__(self) -> int:
        return hash((self.model, self.model_hash, self.vector.tobytes()))

    def __repr__(self) -> str:
        return f"Template(model={self.model!r}, dim={self.dim}, hash={self.model_hash[:12]})"
