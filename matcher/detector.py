"""YuNet face detector: native pre-processing, ONNX inference, Cython decoding, native NMS."""

from __future__ import annotations

import math

import numpy as np

from matcher import _decode, _native
from matcher.backends import Runner
from matcher.models.cards import ModelCard
from matcher.types import Face

#: YuNet's coarsest stride; the network input must be a multiple of it.
DIVISOR = 32


class YuNetDetector:
    """Detect faces with YuNet at (about) the frame's own size.

    The frame is scaled down only when its longer side exceeds ``max_side`` and is padded
    right/bottom to a multiple of 32, as OpenCV's ``FaceDetectorYN`` does when its input size is the
    frame size; small frames are never upsampled to 640x640.
    """

    def __init__(self, runner: Runner, card: ModelCard, *, score_threshold: float | None = None,
                 nms_iou: float | None = None, max_side: int = 640, max_faces: int = 64) -> None:
        defaults = card.extra.get("defaults", {})
        self.runner = runner
        self.card = card
        self.score_threshold = float(defaults.get("score_threshold", 0.6)
                                     if score_threshold is None else score_threshold)
        self.nms_iou = float(defaults.get("nms_iou", 0.3) if nms_iou is None else nms_iou)
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError("score_threshold and nms_iou must be in [0, 1]")
        if max_side < DIVISOR:
            raise ValueError(f"max_side must be >= {DIVISOR}")
        self.max_side = int(max_side)
        self.max_faces = int(max_faces)
        self.input_name = card.input["name"]
        self.strides = tuple(card.output["strides"])

    def input_geometry(self, h: int, w: int) -> tuple[float, int, int]:
        """(scale, padded height, padded width) for an ``h`` x ``w`` frame."""
        scale = min(1.0, self.max_side / max(h, w))
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        return scale, math.ceil(sh / DIVISOR) * DIVISOR, math.ceil(sw / DIVISOR) * DIVISOR

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 frame, best score first."""
        h, w = image.shape[:2]
        scale, ph, pw = self.input_geometry(h, w)
        blob = np.empty((1, 3, ph, pw), np.float32)
        _native.letterbox(image, blob, scale)
        outs = self.runner.run({self.input_name: blob})
        boxes, landmarks, scores = _decode.decode(outs, ph, pw, self.score_threshold, self.strides)
        keep = _native.nms(boxes, scores, self.nms_iou, self.max_faces)
        # Detector-input pixel centres map back to the frame by x = (x' + 0.5) / scale - 0.5.
        inv = 1.0 / scale
        shift = 0.5 * inv - 0.5
        faces = []
        for i in keep:
            x, y, bw, bh = (float(v) for v in boxes[i])
            pts = landmarks[i].astype(np.float64) * inv + shift
            faces.append(Face(box=(x * inv + shift, y * inv + shift, bw * inv, bh * inv),
                              landmarks=pts.astype(np.float32), score=float(scores[i])))
        return faces
