"""The Engine: image in, faces and templates out. Create once, share between threads."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from matcher import _native
from matcher import quality as _quality
from matcher._pair import cosine
from matcher.backends import make_runner, resolve
from matcher.calibration import lookup, thresholds_for
from matcher.decision import Decision
from matcher.detector import YuNetDetector
from matcher.errors import (
    InputError,
    MatcherError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
    QualityError,
)
from matcher.image import DEFAULT_MAX_PIXELS, ImageLike, load_image
from matcher.models import prepare
from matcher.models.cards import ModelCard, load_card
from matcher.recognizer import SFaceRecognizer
from matcher.types import Face, Template

#: A quality policy: a name from the model card ("enrol", "probe"), a mapping of thresholds
#: (see :mod:`matcher.quality`) or None (no quality check).
QualityPolicy = str | Mapping[str, Any] | None

#: Version of the face -> template pipeline (detector input policy, alignment, warp). Part of the
#: model hash: templates made by a different pipeline are not interchangeable (see MODELS.md).
PIPELINE_VERSION = 1


def model_fingerprint(detector: ModelCard, recognizer: ModelCard, max_side: int,
                      flip: bool) -> str:
    """SHA-256 over everything that decides a template's values (not the backend or precision,
    whose templates are interchangeable: see README, 'Backends and precision')."""
    spec = {
        "pipeline": PIPELINE_VERSION,
        "detector": detector.source["sha256"],
        "recognizer": recognizer.source["sha256"],
        "prepare": prepare.PREPARE_VERSION,
        "alignment": recognizer.extra["alignment"]["template"],
        "detector_max_side": max_side,
        "flip": flip,
    }
    # 64 bits: enough to tell pipelines apart (not a security boundary; sealing is), and short
    # enough for a 160-byte serialised template.
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


#: Width of the centrality prior of :func:`primary_face`, as a fraction of the frame's half-diagonal.
#: A gate camera frames the traveller in the middle; a face 35% of the way to a corner counts for
#: 37% of its area, 60% of the way for 5%. (LFW frames its subject the same way.)
CENTRE_SIGMA = 0.35


def primary_face(faces: Sequence[Face], width: int, height: int) -> Face:
    """The face a gate means: largest area weighted by a Gaussian prior on distance from centre."""
    if not faces:
        raise NoFaceError("no face found in the image")
    cx, cy, half_diag = width / 2, height / 2, max(float(np.hypot(width, height)) / 2, 1e-9)

    def weight(f: Face) -> float:
        x, y, w, h = f.box
        d = float(np.hypot(x + w / 2 - cx, y + h / 2 - cy)) / half_diag
        return f.area * float(np.exp(-((d / CENTRE_SIGMA) ** 2)))

    return max(faces, key=weight)


def _thread_budget() -> dict[str, Any]:
    from matcher import threads as _threads

    return _threads.current().as_dict()


class Engine:
    """Face detection and template extraction with the default YuNet + SFace models.

    ``backend``: ``"auto"``, ``"onnxruntime"`` or ``"openvino"``; ``precision`` (the
    recogniser's; the detector always runs fp32): ``"auto"``, ``"fp32"`` or ``"bf16"``. What
    "auto" picks is in :func:`matcher.backends.resolve`. ``threads``: inference threads (default:
    the thread budget of :mod:`matcher.threads`, else all cores this process may use);
    ``streams``: requests run side by side, each with ``threads // streams`` threads (default:
    the budget's, else 1; use more when several threads share the Engine). ``flip=True`` also
    embeds each mirrored crop and averages (more accurate, ~1.8x the embedding time; a
    different model hash). Models are prepared offline on first use
    (:mod:`matcher.models.prepare`). Thread-safe: create once, call from many threads.
    ``quality_policies``: overrides of the card's quality policies, ``{name: {threshold: value}}``
    (see :mod:`matcher.quality`; new names add policies).
    """

    def __init__(self, *, detector: str = "yunet-2023mar", recognizer: str = "sface-2021dec",
                 backend: str = "auto", precision: str = "auto", threads: int | None = None,
                 streams: int | None = None, max_side: int = 640,
                 score_threshold: float | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_faces: int = 64,
                 batch_size: int = 16, flip: bool = False,
                 quality_policies: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if threads is None:  # the process's thread budget (matcher.threads; all cores by default)
            from matcher import threads as _threads

            threads = _threads.inference_threads()
            if streams is None:
                streams = _threads.inference_streams()
        streams = 1 if streams is None else streams
        if type(threads) is not int or threads < 1:
            raise InputError(f"threads must be a positive int, got {threads!r}")
        if type(streams) is not int or not 1 <= streams <= threads:
            raise InputError(f"streams must be an int in 1..threads ({threads}), got {streams!r}")
        if max_pixels < 1 or max_faces < 1 or batch_size < 1:
            raise InputError("max_pixels, max_faces and batch_size must be positive")
        plan = resolve(backend, precision)
        self.backend, self.precision = plan["recognizer"]
        det_backend = plan["detector"][0]
        self.threads = threads
        self.streams = streams
        self.max_pixels = int(max_pixels)
        self.batch_size = int(batch_size)
        det_card, rec_card = load_card(detector), load_card(recognizer)
        if det_card.kind != "detector" or rec_card.kind != "recognizer":
            raise ModelError(f"{detector!r} must be a detector and {recognizer!r} a recogniser")
        self.detector = YuNetDetector(
            make_runner(prepare.prepared_path(det_card), det_backend, "fp32", threads,
                        static_shapes=True, streams=streams),
            det_card, score_threshold=score_threshold, max_side=max_side, max_faces=max_faces)
        self.recognizer = SFaceRecognizer(
            make_runner(prepare.prepared_path(rec_card), self.backend, self.precision, threads,
                        streams=streams),
            rec_card, max_batch=batch_size, flip=flip)
        self.model = rec_card.id
        self.model_hash = model_fingerprint(det_card, rec_card, self.detector.max_side, flip)
        self.operating_points: dict[float, float] = thresholds_for(rec_card, self.model_hash)
        self._key = (self.model, self.model_hash)
        self.quality_scoring: dict[str, Any] = rec_card.extra.get("quality_scoring", {})
        self.quality_policies = _quality.merge_policies(
            rec_card.extra.get("quality_policies", {}), quality_policies)

    # ------------------------------------------------------------------ detection
    def detect(self, image: ImageLike) -> list[Face]:
        """All faces in ``image``, best detector score first."""
        return self.detector.detect(load_image(image, max_pixels=self.max_pixels))

    # ------------------------------------------------------------------ templates
    def template(self, image: ImageLike, *, quality: QualityPolicy = None) -> Template:
        """Template of the primary face (largest, most central); :class:`NoFaceError` if none.

        ``quality="enrol"`` / ``"probe"`` (or a policy mapping) first checks the face against that
        quality policy and raises :class:`QualityError` (``.reason``: "move closer", ...) if it
        fails; ``None`` (the default) checks nothing.
        """
        return self.templates([image], quality=quality)[0]  # type: ignore[return-value]

    def templates(self, images: Sequence[ImageLike], *,
                  on_error: Literal["raise", "return"] = "raise",
                  quality: QualityPolicy = None) -> list[Template | MatcherError]:
        """Templates of the primary face of each image, embedded in batches.

        With ``on_error="return"`` a failed image yields its :class:`MatcherError` in its place
        instead of raising, so one bad file does not sink a batch. ``quality``: as in
        :meth:`template` (a failed check is a :class:`QualityError`).
        """
        if on_error not in ("raise", "return"):
            raise InputError(f"on_error must be 'raise' or 'return', got {on_error!r}")
        if isinstance(images, (str, bytes, np.ndarray)):
            raise InputError("templates() takes a sequence of images; use template() for one")
        policy = None if quality is None else self._quality_policy(quality)
        results: list[Template | MatcherError] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._template_chunk(images[start:start + self.batch_size], on_error,
                                                policy))
        return results

    # ------------------------------------------------------------------ quality
    def quality(self, image: ImageLike, face: Face | None = None, *,
                policy: QualityPolicy = "probe") -> _quality.Quality:
        """Quality of the primary face of ``image`` (or of ``face``, one of its detected faces):
        named components, unified score 0..100, and the verdict under ``policy`` (see
        :mod:`matcher.quality`); :class:`NoFaceError` if there is no face."""
        pol = self._quality_policy(policy)
        frame = load_image(image, max_pixels=self.max_pixels)
        faces = self.detector.detect(frame)
        if face is None:
            face = primary_face(faces, frame.shape[1], frame.shape[0])
        elif not isinstance(face, Face):
            raise InputError(f"face must be a Face or None, got {type(face).__name__}")
        batch = self.recognizer.new_batch(1)
        self.recognizer.align_into(frame, [face], batch, 0)
        return self._assess(face, faces, batch, 0, pol)

    def _quality_policy(self, policy: QualityPolicy) -> tuple[str | None, dict[str, Any]]:
        return _quality.resolve_policy(policy, self.quality_policies)

    def _assess(self, face: Face, faces: Sequence[Face], batch: np.ndarray, slot: int,
                policy: tuple[str | None, dict[str, Any]]) -> _quality.Quality:
        stats = _quality.crop_statistics(batch, slot, 1, rgb=self.recognizer.swap_rb)[0]
        fraction = policy[1].get("other_face_fraction")
        values = _quality.measure(face, faces, stats, 0.5 if fraction is None else float(fraction))
        return _quality.assess(values, self.quality_scoring, policy[0], policy[1], face)

    def face_templates(self, image: ImageLike, *, quality: QualityPolicy = None
                       ) -> list[tuple[Face, Template | QualityError]]:
        """Every face in ``image`` with its template (for screening group photos). With a
        ``quality`` policy, a face that fails it comes with its :class:`QualityError` instead."""
        frame = load_image(image, max_pixels=self.max_pixels)
        faces = self.detector.detect(frame)
        if not faces:
            return []
        batch = self.recognizer.new_batch(len(faces))
        self.recognizer.align_into(frame, faces, batch, 0)
        verdicts: list[QualityError | None] = [None] * len(faces)
        if quality is not None:
            policy = self._quality_policy(quality)
            for i, face in enumerate(faces):
                q = self._assess(face, faces, batch, i, policy)
                if not q.passed:
                    verdicts[i] = QualityError(f"{q.advice}: {'; '.join(q.reasons)} (face {i}, "
                                               f"policy {q.policy})", q, q.advice)
        keep = [i for i, v in enumerate(verdicts) if v is None]
        vecs = self.recognizer.embed(batch[keep]) if keep else np.empty((0, self.recognizer.dim))
        made = dict(zip(keep, vecs))
        return [(f, verdicts[i] if verdicts[i] is not None else self._template(made[i]))
                for i, f in enumerate(faces)]

    def _template(self, vector: np.ndarray) -> Template:
        return Template(vector=vector, model=self.model, model_hash=self.model_hash)

    def align_primary(self, image: ImageLike, batch: np.ndarray, slot: int,
                      what: str = "the image") -> tuple[Face, list[Face]]:
        """Decode ``image``, detect, and align its primary face into ``batch[slot]``; returns
        (primary face, all faces). :class:`NoFaceError` names ``what`` when there is none."""
        frame = load_image(image, max_pixels=self.max_pixels)
        faces = self.detector.detect(frame)
        if not faces:
            raise NoFaceError(f"no face found in {what}")
        face = primary_face(faces, frame.shape[1], frame.shape[0])
        self.recognizer.align_into(frame, [face], batch, slot)
        return face, faces

    def _template_chunk(self, images: Sequence[ImageLike], on_error: str,
                        quality: tuple[str | None, dict[str, Any]] | None = None) -> list[Any]:
        # Each frame is aligned into the batch as soon as it is detected, so at most one decoded
        # frame is alive at a time.
        slots: list[Any] = []
        batch = self.recognizer.new_batch(len(images))
        n = 0
        for i, img in enumerate(images):
            try:
                face, faces = self.align_primary(
                    img, batch, n, f"image {i} of the batch" if len(images) > 1 else "the image")
                if quality is not None:
                    q = self._assess(face, faces, batch, n, quality)
                    if not q.passed:
                        where = f"image {i} of the batch" if len(images) > 1 else "the image"
                        raise QualityError(f"{q.advice}: {'; '.join(q.reasons)} ({where}, "
                                           f"policy {q.policy})", q, q.advice)
                slots.append(n)
                n += 1
            except MatcherError as exc:
                if on_error == "raise":
                    raise
                slots.append(exc)
        if n == 0:
            return slots
        vecs = self.recognizer.embed(batch[:n])
        return [s if isinstance(s, MatcherError) else self._template(vecs[s]) for s in slots]

    # ------------------------------------------------------------------ 1:1 verification
    def verify(self, probe: ImageLike | Template, reference: ImageLike | Template, *,
               fmr: float = 1e-4) -> Decision:
        """Same person? Decided at the threshold calibrated for false match rate ``fmr``.

        ``probe`` and ``reference`` are each an image or a :class:`Template` of this engine's
        model (else :class:`ModelMismatchError`); an FMR without a calibrated threshold is a
        :class:`CalibrationError`.
        """
        threshold = self.operating_points.get(fmr)
        if threshold is None:
            threshold = lookup(self.operating_points, fmr, self.model)
        if type(probe) is not Template or type(reference) is not Template:
            todo = [x for x in (probe, reference) if not isinstance(x, Template)]
            made = iter(self.templates(todo))
            probe = probe if isinstance(probe, Template) else next(made)
            reference = reference if isinstance(reference, Template) else next(made)
        key = self._key
        for t in (probe, reference):
            if t._key != key:
                raise ModelMismatchError(f"template is from {t.model}#{t.model_hash}, this engine "
                                         f"calibrated {self.model}#{self.model_hash}")
        score = cosine(probe._packed, reference._packed)
        return Decision(score, threshold, score >= threshold, fmr, self.model)

    # ------------------------------------------------------------------ introspection
    def describe(self) -> dict[str, Any]:
        """What runs where: backend, precision, threads, SIMD level, models, versions."""
        import onnxruntime

        info = {
            "backend": self.backend,
            "precision": self.precision,
            "threads": self.threads,
            "streams": self.streams,
            "thread_budget": _thread_budget(),
            "simd": _native.simd_level(),
            "model": self.model,
            "model_hash": self.model_hash,
            "detector": self.detector.card.id,
            "detector_backend": self.detector.runner.backend,
            "detector_max_side": self.detector.max_side,
            "flip": self.recognizer.flip,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
        if self.backend == "openvino":
            import openvino

            info["openvino"] = openvino.get_version()
        return info
