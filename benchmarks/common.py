"""Shared pieces of the benchmarks: the faces to run on and the OpenCV peer pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from matcher.models import prepare
from matcher.models.cards import load_card

from matcher.datasets import default_lfw_dir
from matcher.image import load_image


def face_images(n: int = 64) -> list[Path | np.ndarray]:
    """``n`` real face images: lfw-dev files spread over the set, else scikit-image's astronaut."""
    root = default_lfw_dir()
    if root is not None:
        files = sorted((root / "images").glob("*/*.jpg"))
        return files[:: max(1, len(files) // n)][:n]
    from skimage import data

    return [np.ascontiguousarray(data.astronaut()[:, :, ::-1])] * n


def frames(images) -> list[np.ndarray]:
    return [load_image(i) for i in images]


class OpenCVPipeline:
    """OpenCV FaceDetectorYN (at the frame's size) + FaceRecognizerSF.alignCrop + .feature,
    on the same prepared model files: the obvious peer."""

    def __init__(self, threads: int) -> None:
        import cv2

        cv2.setNumThreads(threads)
        self.cv2 = cv2
        self.det = cv2.FaceDetectorYN.create(
            str(prepare.prepared_path(load_card("yunet-2023mar"))), "", (320, 320), 0.6, 0.3, 5000)
        self.rec = cv2.FaceRecognizerSF.create(
            str(prepare.prepared_path(load_card("sface-2021dec"))), "")

    def template(self, frame: np.ndarray) -> np.ndarray:
        self.det.setInputSize((frame.shape[1], frame.shape[0]))
        _, faces = self.det.detect(frame)
        if faces is None:
            raise RuntimeError("no face")
        v = self.rec.feature(self.rec.alignCrop(frame, faces[0])).ravel()
        return v / np.linalg.norm(v)


def timings(fn, items, repeat: int = 3) -> np.ndarray:
    """Per-call wall times (seconds) of ``fn(item)`` over ``items`` ``repeat`` times, after warm-up."""
    for it in items[:3]:
        fn(it)
    out = []
    for _ in range(repeat):
        for it in items:
            t = time.perf_counter()
            fn(it)
            out.append(time.perf_counter() - t)
    return np.array(out)


def summary(ts: np.ndarray) -> str:
    return f"median {1e3 * np.median(ts):7.2f} ms  p99 {1e3 * np.percentile(ts, 99):7.2f} ms"
