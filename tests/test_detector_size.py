"""Detector input size follows the frame: equal to OpenCV's FaceDetectorYN run the same way.

Frames whose longer side is <= 640 run at their own size (padded to a multiple of 32), never
upsampled; results equal FaceDetectorYN with ``setInputSize(frame size)``. Larger frames are
scaled to a 640 longer side; results equal the fixed 640x640 letterbox detector, while the
network runs on e.g. 640x384 instead of 640x640. (Upsampling a small frame to 640 is a different
pipeline: landmarks move by ~6 px, see benchmarks/detector_size_report.py and README.)
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from matcher.models import prepare
from matcher.models.cards import load_card

FIXED = 640


@pytest.fixture(scope="module")
def opencv_yunet(engine):
    det = engine.detector
    return cv2.FaceDetectorYN.create(str(prepare.prepared_path(load_card("yunet-2023mar"))), "",
                                     (320, 320), det.score_threshold, det.nms_iou, 5000)


def _opencv_at(cvd, frame: np.ndarray) -> np.ndarray:
    """FaceDetectorYN at the frame's own size: rows of box (4), landmarks (10), score."""
    cvd.setInputSize((frame.shape[1], frame.shape[0]))
    _, faces = cvd.detect(frame)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _opencv_fixed(cvd, frame: np.ndarray) -> tuple[np.ndarray, float]:
    """FaceDetectorYN on a 640x640 letterbox of the frame (scaled to fit): (rows, scale)."""
    h, w = frame.shape[:2]
    s = FIXED / max(h, w)
    small = cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
    pad = np.zeros((FIXED, FIXED, 3), np.uint8)
    pad[:small.shape[0], :small.shape[1]] = small
    cvd.setInputSize((FIXED, FIXED))
    _, faces = cvd.detect(pad)
    return (np.zeros((0, 15), np.float32) if faces is None else faces), s


def _max_distance(ours, landmarks: np.ndarray, boxes: np.ndarray | None = None) -> float:
    """Largest landmark (and box) coordinate difference between each of our faces and the
    reference face nearest to it; inf if the face counts differ."""
    if len(ours) != len(landmarks):
        return float("inf")
    worst = 0.0
    for f in ours:
        j = int(np.argmin(np.linalg.norm(landmarks.mean(1) - f.landmarks.mean(0), axis=1)))
        worst = max(worst, float(np.abs(landmarks[j] - f.landmarks).max()))
        if boxes is not None:
            worst = max(worst, float(np.abs(boxes[j] - np.asarray(f.box)).max()))
    return worst


@pytest.mark.parametrize("size", [(250, 250), (333, 250), (512, 512), (640, 480)])
def test_small_frames_run_at_their_size_and_equal_opencv(engine, opencv_yunet, astronaut_bgr,
                                                         size):
    frame = cv2.resize(astronaut_bgr, size)
    _, ph, pw = engine.detector.input_geometry(*frame.shape[:2])
    assert (ph, pw) == tuple(-(-v // 32) * 32 for v in frame.shape[:2])  # padded, not upsampled
    ref = _opencv_at(opencv_yunet, frame)
    ours = engine.detector.detect(frame)
    assert len(ours) == 1
    assert _max_distance(ours, ref[:, 4:14].reshape(-1, 5, 2), ref[:, :4]) < 0.01


@pytest.mark.parametrize("size", [(1000, 800), (1280, 720), (1920, 1080), (800, 1200)])
def test_large_frames_equal_the_fixed_640_detector(engine, opencv_yunet, astronaut_bgr, size):
    w, h = size
    frame = np.full((h, w, 3), 120, np.uint8)
    face = cv2.resize(astronaut_bgr, (min(size) // 2, min(size) // 2))
    frame[20:20 + face.shape[0], 40:40 + face.shape[1]] = face
    scale, ph, pw = engine.detector.input_geometry(h, w)
    assert max(ph, pw) == FIXED and min(ph, pw) < FIXED  # the network sees less than 640x640
    ref, s = _opencv_fixed(opencv_yunet, frame)
    assert scale == pytest.approx(s)
    landmarks = (ref[:, 4:14].reshape(-1, 5, 2) + 0.5) / s - 0.5  # pixel centres to the frame
    ours = engine.detector.detect(frame)
    assert len(ours) == 1
    assert _max_distance(ours, landmarks) <= 1.0


def test_lfw_dev_frames_equal_opencv_at_frame_size(engine, opencv_yunet, lfw_dir):
    from matcher.datasets import labelled_images
    from matcher.image import load_image

    people = labelled_images(lfw_dir / "images")
    files = [p for ps in people.values() for p in ps][::23][:300]
    worst = 0.0
    for p in files:
        frame = load_image(p)
        ref = _opencv_at(opencv_yunet, frame)
        worst = max(worst, _max_distance(engine.detector.detect(frame),
                                         ref[:, 4:14].reshape(-1, 5, 2), ref[:, :4]))
    assert worst < 0.01, f"largest difference {worst:.4f} px over {len(files)} images"
