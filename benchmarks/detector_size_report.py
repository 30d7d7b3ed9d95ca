"""Detector input size: YuNet at the frame's own size (matcher) vs a fixed 640x640 letterbox.

    python benchmarks/detector_size_report.py              # 300 images + LFW View-2 accuracy
    python benchmarks/detector_size_report.py --images 100 --no-accuracy

Same prepared YuNet file, same runner, same decoder and NMS; the only difference is the input:
- frame size: the frame padded right/bottom to a multiple of 32 (250x250 LFW -> 256x256),
  as ``Engine`` runs it and as OpenCV's ``FaceDetectorYN`` does with ``setInputSize(frame)``;
- fixed 640: the frame scaled by 640 / longer side (2.56x up for LFW) into a 640x640 letterbox,
  results mapped back to frame pixels.

Reported: detector time per frame for both; for the primary face of each image, the largest of
its five landmark distances between the two inputs (frame pixels): median, p90, p99, max and the
share within 1 px; and (unless ``--no-accuracy``) LFW View-2 accuracy (folds 1-5) with templates
aligned on each detector's landmarks (same recogniser). Requires ../shared/data/lfw-dev.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import matcher
from matcher import _decode, _native
from matcher.datasets import default_lfw_dir, labelled_images, read_pairs
from matcher.engine import primary_face
from matcher.errors import NoFaceError
from matcher.image import load_image
from matcher.metrics import protocol_accuracy
from matcher.types import Face

FIXED = 640


def detect_fixed(det, frame: np.ndarray, side: int = FIXED) -> list[Face]:
    """YuNet on a ``side`` x ``side`` letterbox of the frame (scaled to fit, up or down)."""
    h, w = frame.shape[:2]
    scale = side / max(h, w)
    blob = np.zeros((1, 3, side, side), np.float32)
    _native.letterbox(frame, blob, scale)
    outs = det.runner.run({det.input_name: blob})
    boxes, lms, scores = _decode.decode(outs, side, side, det.score_threshold, det.strides)
    keep = _native.nms(boxes, scores, det.nms_iou, det.max_faces)
    inv, shift = 1.0 / scale, 0.5 / scale - 0.5  # pixel centres back to the frame
    return [Face(box=tuple(float(v) * inv + (shift if j < 2 else 0.0)
                           for j, v in enumerate(boxes[i])),
                 landmarks=(lms[i].astype(np.float64) * inv + shift).astype(np.float32),
                 score=float(scores[i])) for i in keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args()
    root = default_lfw_dir()
    if root is None:
        raise SystemExit("lfw-dev not found: set MATCHER_LFW_DIR")
    eng = matcher.Engine(threads=1)
    det = eng.detector
    people = labelled_images(root / "images")
    files = [p for ps in people.values() for p in ps]
    files = files[:: max(1, len(files) // args.images)][: args.images]
    frames = [load_image(p) for p in files]
    for f in frames[:5]:
        det.detect(f), detect_fixed(det, f)

    t_frame, t_fixed, devs = [], [], []
    for f in frames:
        t = time.perf_counter()
        a = det.detect(f)
        t_frame.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = detect_fixed(det, f)
        t_fixed.append(time.perf_counter() - t)
        if not a or not b:
            devs.append(np.inf)
            continue
        pa = primary_face(a, f.shape[1], f.shape[0])
        centre = pa.landmarks.mean(0)
        pb = min(b, key=lambda x: float(np.linalg.norm(x.landmarks.mean(0) - centre)))
        devs.append(float(np.linalg.norm(pa.landmarks - pb.landmarks, axis=1).max()))
    d = np.array(devs)
    print(f"{len(frames)} lfw-dev frames ({frames[0].shape[1]}x{frames[0].shape[0]}), 1 thread, "
          f"detector {det.runner.backend}")
    for name, ts in (("frame size", t_frame), (f"fixed {FIXED}", t_fixed)):
        print(f"  detect at {name:11s}: median {1e3 * np.median(ts):6.2f} ms, "
              f"p99 {1e3 * np.percentile(ts, 99):6.2f} ms")
    print(f"  primary-face landmark distance, frame size vs fixed {FIXED} (frame px): median "
          f"{np.median(d):.2f}, p90 {np.percentile(d, 90):.2f}, p99 {np.percentile(d, 99):.2f}, "
          f"max {d.max():.2f}; within 1 px: {100 * np.mean(d <= 1):.1f}%")
    if args.no_accuracy:
        return

    pairs = read_pairs(root)
    paths = sorted({p for pr in pairs for p in (pr.a, pr.b)})
    batch = eng.recognizer.new_batch(1)
    vecs: dict[str, dict] = {"frame size": {}, f"fixed {FIXED}": {}}
    for p in paths:
        f = load_image(p)
        for name, faces in (("frame size", det.detect(f)),
                            (f"fixed {FIXED}", detect_fixed(det, f))):
            if not faces:
                continue
            face = primary_face(faces, f.shape[1], f.shape[0])
            eng.recognizer.align_into(f, [face], batch, 0)
            vecs[name][p] = eng.recognizer.embed(batch)[0]
    genuine = np.array([pr.genuine for pr in pairs])
    folds = np.array([pr.fold for pr in pairs])
    for name, v in vecs.items():
        s = np.array([float(v[pr.a] @ v[pr.b]) if pr.a in v and pr.b in v else -1.0
                      for pr in pairs])
        acc, sd, _ = protocol_accuracy(s, genuine, folds)
        missing = len(paths) - len(v)
        print(f"  LFW View-2 with the {name:11s} detector: {100 * acc:.2f}% +- {100 * sd:.2f} "
              f"({missing} images without a face)")
    common = [p for p in paths if p in vecs["frame size"] and p in vecs[f"fixed {FIXED}"]]
    cos = np.array([float(vecs["frame size"][p] @ vecs[f"fixed {FIXED}"][p]) for p in common])
    print(f"  template cosine frame size vs fixed {FIXED}: median {np.median(cos):.4f}, "
          f"p5 {np.percentile(cos, 5):.4f}, min {cos.min():.4f}")


if __name__ == "__main__":
    try:
        main()
    except NoFaceError as exc:  # pragma: no cover
        raise SystemExit(str(exc)) from None
