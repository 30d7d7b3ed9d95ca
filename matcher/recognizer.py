"""SFace recogniser: fused native alignment into a batch buffer, ONNX inference, L2 normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matcher import _native
from matcher.backends import Runner
from matcher.errors import ModelError
from matcher.models.cards import ModelCard
from matcher.types import Face


class SFaceRecognizer:
    """Align faces onto the card's 112x112 template and embed them (batched)."""

    def __init__(self, runner: Runner, card: ModelCard, *, max_batch: int = 16,
                 flip: bool = False) -> None:
        align = card.extra["alignment"]
        self.runner = runner
        self.card = card
        self.template_points = np.asarray(align["template"], dtype=np.float64)
        self.out_h, self.out_w = (int(v) for v in align["size"])
        self.input_name = card.input["name"]
        self.output_name = card.output["name"]
        self.dim = card.embedding_size
        self.swap_rb = card.input["channels"] == "RGB"  # frames are BGR
        self.max_batch = int(max_batch)
        self.flip = bool(flip)

    def transform(self, face: Face) -> np.ndarray:
        """2x3 least-squares similarity transform from the face's landmarks to the template."""
        return _native.similarity_transform(face.landmarks.astype(np.float64), self.template_points)

    def align_into(self, image: np.ndarray, faces: Sequence[Face], batch: np.ndarray,
                   offset: int) -> None:
        """Warp ``faces`` of ``image`` into ``batch[offset:offset + len(faces)]`` (NCHW float32)."""
        if not faces:
            return
        mats = np.stack([self.transform(f) for f in faces])
        _native.warp_faces(image, mats, batch, offset, self.swap_rb)

    def new_batch(self, n: int) -> np.ndarray:
        return np.empty((n, 3, self.out_h, self.out_w), np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Unit-length embeddings ``(N, dim)`` float32 of an aligned batch, ``max_batch`` at a time.

        With ``flip``, each crop's embedding is the sum of its own and its mirror image's
        (test-time augmentation as in ArcFace's evaluation) before normalisation.
        """
        out = np.empty((batch.shape[0], self.dim), np.float32)
        for s in range(0, batch.shape[0], self.max_batch):
            chunk = batch[s:s + self.max_batch]
            n = chunk.shape[0]
            if self.flip:
                chunk = np.concatenate([chunk, chunk[:, :, :, ::-1]])
            emb = self.runner.run({self.input_name: chunk})[self.output_name]
            out[s:s + n] = emb[:n] + emb[n:] if self.flip else emb
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ModelError("the recogniser returned a non-finite or zero embedding")
        return out / norms
