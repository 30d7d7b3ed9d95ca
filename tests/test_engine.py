"""Engine: detection and templates on a real face, bad input, threads, backends."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

import matcher
from matcher.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    ModelMismatchError,
    NoFaceError,
)


def test_detects_the_astronaut_with_sane_landmarks(engine, astronaut_bgr):
    faces = engine.detect(astronaut_bgr)
    assert len(faces) == 1
    f = faces[0]
    assert 0.6 <= f.score <= 1.0
    x, y, w, h = f.box
    assert 100 < x < 250 and 30 < y < 130 and 60 < w < 140 and 80 < h < 160  # her face, 512x512 frame
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = f.landmarks
    assert rex < lex and rmx < lmx                 # subject's right eye/mouth on the image's left
    assert max(rey, ley) < ny < min(rmy, lmy)      # eyes above nose above mouth
    assert x <= nx <= x + w and y <= ny <= y + h
    assert 20 < f.inter_eye_distance < 80


def test_template_is_a_unit_vector_bound_to_the_model(engine, astronaut_bgr):
    tpl = engine.template(astronaut_bgr)
    assert tpl.model == "sface-2021dec" and len(tpl.model_hash) == 16
    assert tpl.vector.shape == (128,) and tpl.vector.dtype == np.float32
    assert abs(float(np.linalg.norm(tpl.vector)) - 1.0) < 1e-5
    assert not tpl.vector.flags.writeable
    assert tpl.similarity(tpl) == pytest.approx(1.0, abs=1e-6)
    other = matcher.Template(tpl.vector, model="other-model", model_hash="x" * 16)
    with pytest.raises(ModelMismatchError):
        tpl.similarity(other)


def test_same_face_under_perturbation_stays_similar(engine, astronaut_bgr):
    ref = engine.template(astronaut_bgr)
    h, w = astronaut_bgr.shape[:2]
    small = cv2.resize(astronaut_bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    rot = cv2.warpAffine(astronaut_bgr, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h))
    jpeg = cv2.imencode(".jpg", astronaut_bgr, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    for img in (small, rot, jpeg):
        assert ref.similarity(engine.template(img)) > 0.7
    # A different "person": the face mirrored is still her, a heavily warped crop is not the point;
    # compare against an unrelated synthetic face-free image instead:
    with pytest.raises(NoFaceError):
        engine.template(np.full((200, 200, 3), 128, np.uint8))


def test_batch_equals_single_and_errors_can_be_returned(engine, astronaut_bgr):
    single = engine.template(astronaut_bgr)
    gray = np.full((64, 64), 90, np.uint8)
    out = engine.templates([astronaut_bgr, gray, b"", astronaut_bgr[:, ::-1]], on_error="return")
    assert isinstance(out[1], NoFaceError) and isinstance(out[2], ImageDecodeError)
    assert out[0].similarity(single) > 0.9999
    assert out[3].similarity(single) > 0.8  # mirror image of the same face
    with pytest.raises(NoFaceError):
        engine.templates([astronaut_bgr, gray])
    with pytest.raises(InputError):
        engine.templates(astronaut_bgr)
    assert engine.templates([]) == []


@pytest.mark.parametrize("bad, error", [
    (b"", ImageDecodeError),
    (b"\xff\xd8\xff" + bytes(100), ImageDecodeError),
    (np.random.default_rng(3).bytes(2048), ImageDecodeError),
    (np.zeros((0, 0, 3), np.uint8), InputError),
    (np.zeros((1, 1, 3), np.uint8), NoFaceError),
    (np.zeros((1, 1), np.uint8), NoFaceError),
    (np.zeros((5, 5, 3), np.float64), InputError),
    (np.zeros((2, 5, 5, 3), np.uint8), InputError),
    (np.broadcast_to(np.zeros(1, np.uint8), (30000, 30000, 3)), ImageTooLargeError),
])
def test_bad_input_through_the_engine(engine, bad, error):
    with pytest.raises(error):
        engine.template(bad)


def test_extreme_aspect_ratios_do_not_crash(engine):
    for shape in ((1, 5000, 3), (5000, 1, 3), (31, 33, 3), (700, 3, 3)):
        assert engine.detect(np.zeros(shape, np.uint8)) == []


def test_concurrent_calls_give_the_serial_answer(engine, astronaut_bgr):
    imgs = [astronaut_bgr, cv2.resize(astronaut_bgr, (300, 300)), astronaut_bgr[50:450, 60:460].copy()]
    expected = [engine.template(i).vector for i in imgs]
    errors, results = [], {}

    def work(k: int) -> None:
        try:
            for r in range(5):
                j = (k + r) % len(imgs)
                results.setdefault(j, []).append(engine.template(imgs[j]).vector)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for j, vecs in results.items():
        for v in vecs:
            assert float(v @ expected[j]) > 0.99999


def test_backends_agree(astronaut_bgr):
    ort = matcher.Engine(backend="onnxruntime", threads=1)
    ov32 = matcher.Engine(backend="openvino", precision="fp32", threads=1)
    a, b = ort.template(astronaut_bgr), ov32.template(astronaut_bgr)
    assert a.model_hash == b.model_hash
    assert a.similarity(b) > 0.9999
    assert ort.describe()["backend"] == "onnxruntime" and ort.describe()["precision"] == "fp32"
    with pytest.raises(InputError):
        matcher.Engine(backend="onnxruntime", precision="bf16")


@pytest.mark.parametrize("kwargs", [{"backend": "tensorrt"}, {"precision": "int3"}, {"threads": 0},
                                    {"threads": 1.5}, {"batch_size": 0}])
def test_bad_engine_arguments(kwargs):
    with pytest.raises(InputError):
        matcher.Engine(**kwargs)


def test_describe(engine):
    d = engine.describe()
    assert d["model"] == "sface-2021dec" and d["backend"] in ("onnxruntime", "openvino")
    assert d["simd"] in ("baseline", "avx2", "avx512") and d["threads"] >= 1
