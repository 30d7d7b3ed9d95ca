"""Accuracy and agreement on real faces: the shared LFW development split (skips without it)."""

from __future__ import annotations

import numpy as np
import pytest
from matcher.models import prepare
from matcher.models.cards import load_card

import matcher
from matcher.backends import cpu_supports_bf16
from matcher.datasets import read_pairs
from matcher.errors import MatcherError
from matcher.evaluation import all_pairs_scores
from matcher.metrics import protocol_accuracy


@pytest.fixture(scope="module")
def all_images(lfw_dir):
    return sorted((lfw_dir / "images").glob("*/*.jpg"))


@pytest.fixture(scope="module")
def all_templates(engine, all_images):
    """Template (or the error) of every lfw-dev image with the default engine, computed once."""
    return dict(zip(all_images, engine.templates(all_images, on_error="return")))


def _protocol(lfw_dir, tpls=None, engine=None):
    pairs = read_pairs(lfw_dir)
    if tpls is None:
        paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
        tpls = dict(zip(paths, engine.templates(paths, on_error="return")))
    failed = [p for p, t in tpls.items() if isinstance(t, MatcherError)]
    assert not failed, f"no template for {failed[:5]}"
    scores = np.array([tpls[p.a].similarity(tpls[p.b]) for p in pairs])
    genuine = np.array([p.genuine for p in pairs])
    folds = np.array([p.fold for p in pairs])
    assert len(pairs) == 3000
    return protocol_accuracy(scores, genuine, folds)


def test_lfw_protocol_accuracy(all_templates, lfw_dir):
    acc, std, per_fold = _protocol(lfw_dir, tpls=all_templates)
    print(f"LFW dev folds 1-5: accuracy {100 * acc:.2f}% ± {100 * std:.2f} {per_fold}")
    # The foundation issue asks for >= 99.3%. This int8 block-quantised SFace reaches 99.27% here
    # (22 errors in 3000, all hard genuine pairs or one look-alike; OpenCV's own pipeline on the
    # same files: 99.20% with the central face, 97.37% with its top-scored face). The bar sits one
    # pair below the measured value, so losing two pairs fails; flip=True (below) clears 99.3%.
    assert acc >= 0.9925


def test_lfw_protocol_accuracy_with_flip_augmentation(lfw_dir):
    acc, std, _ = _protocol(lfw_dir, engine=matcher.Engine(flip=True))
    print(f"LFW dev folds 1-5, flip=True: accuracy {100 * acc:.2f}% ± {100 * std:.2f}")
    assert acc >= 0.993


def test_face_found_in_nearly_every_image(all_templates, all_images):
    missed = [p for p in all_images if isinstance(all_templates[p], MatcherError)]
    rate = 1 - len(missed) / len(all_images)
    print(f"face found in {rate:.4%} of {len(all_images)} images; missed {missed[:10]}")
    assert len(all_images) > 6000
    assert rate >= 0.999


def _opencv_template(det, rec, path, our_face):
    import cv2

    img = cv2.imread(str(path))
    det.setInputSize((img.shape[1], img.shape[0]))
    _, faces = det.detect(img)
    assert faces is not None, f"OpenCV found no face in {path}"
    nose = our_face.landmarks[2]
    f = min(faces, key=lambda r: float(np.hypot(r[8] - nose[0], r[9] - nose[1])))
    v = rec.feature(rec.alignCrop(img, f)).ravel()
    return v / np.linalg.norm(v)


def test_agrees_with_opencv_pipeline_on_the_same_model_files(engine, all_images):
    import cv2

    det = cv2.FaceDetectorYN.create(str(prepare.prepared_path(load_card("yunet-2023mar"))), "",
                                    (320, 320), 0.6, 0.3, 5000)
    rec = cv2.FaceRecognizerSF.create(str(prepare.prepared_path(load_card("sface-2021dec"))), "")
    sample = all_images[:: max(1, len(all_images) // 120)][:120]
    cos = []
    for path in sample:
        frame = matcher.load_image(path)
        faces = engine.detector.detect(frame)
        face = matcher.engine.primary_face(faces, frame.shape[1], frame.shape[0])
        ours = engine.template(path).vector
        cos.append(float(ours @ _opencv_template(det, rec, path, face)))
    cos = np.array(cos)
    print(f"cosine to OpenCV over {len(cos)} images: min {cos.min():.4f} median {np.median(cos):.5f}")
    assert len(cos) >= 100
    assert cos.min() >= 0.99


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_templates_are_interchangeable_with_fp32(all_images):
    fp32 = matcher.Engine(backend="openvino", precision="fp32")
    bf16 = matcher.Engine(backend="openvino", precision="bf16")
    sample = all_images[7:: max(1, len(all_images) // 100)][:100]
    a = fp32.templates(sample, on_error="return")
    b = bf16.templates(sample, on_error="return")
    cos = np.array([x.similarity(y) for x, y in zip(a, b) if not isinstance(x, MatcherError)])
    print(f"bf16 vs fp32 cosine over {len(cos)} faces: min {cos.min():.5f}")
    assert len(cos) >= 95 and cos.min() >= 0.999  # the bar for sharing one model id


def test_calibrated_thresholds_reproduce(engine, all_templates):
    """FMR at each stored threshold, re-measured on the calibration data, equals its target."""
    record = load_card("sface-2021dec").extra["calibration"][engine.model_hash]
    ok = [(p.parent.name, t) for p, t in all_templates.items() if not isinstance(t, MatcherError)]
    scores = all_pairs_scores(np.stack([t.vector for _, t in ok]), [n for n, _ in ok])
    assert scores.impostor.size == record["impostor_comparisons"]
    assert scores.genuine.size == record["genuine_comparisons"]
    for key, threshold in record["fmr_thresholds"].items():
        target, n = float(key), scores.impostor.size
        measured = float(scores.fmr(threshold))
        # Sampling error of an FMR from n comparisons (3 binomial standard deviations), floored at
        # 10% of the target: bf16 kernels differ slightly between CPUs (AMX vs AVX512-BF16).
        tol = max(3 * np.sqrt(target * (1 - target) / n), 0.1 * target)
        print(f"FMR target {key}: threshold {threshold:.4f}, measured {measured:.3e}")
        assert abs(measured - target) <= tol
    assert engine.verify(ok[0][1], ok[0][1], fmr=1e-5).match


def test_int8_templates_score_within_0005_of_float32(all_templates, lfw_dir):
    pairs = read_pairs(lfw_dir)
    diffs = []
    for p in pairs:
        a, b = all_templates[p.a], all_templates[p.b]
        qa, qb = (matcher.Template.from_bytes(t.to_bytes("int8")) for t in (a, b))
        diffs.append(abs(qa.similarity(qb) - a.similarity(b)))
        diffs.append(abs(qa.similarity(b) - a.similarity(b)))  # card template vs live capture
    print(f"int8 vs float32 score difference over {len(pairs)} pairs: max {max(diffs):.5f}")
    assert max(diffs) <= 0.005


def test_lfw_identification_rank1_and_fnir_at_fpir(engine, all_templates):
    """First image of each person with >= 2 images enrolled; their other images are mated probes,
    single-image people non-mated probes."""
    from matcher.gallery import Gallery

    by_person: dict[str, list] = {}
    for p, t in sorted(all_templates.items()):
        if not isinstance(t, MatcherError):
            by_person.setdefault(p.parent.name, []).append(t)
    enrolled = {n: ts[0] for n, ts in by_person.items() if len(ts) >= 2}
    mated = [(n, t) for n, ts in by_person.items() if len(ts) >= 2 for t in ts[1:]]
    non_mated = [ts[0] for n, ts in by_person.items() if len(ts) == 1]
    g = Gallery(engine)
    g.enroll_many(list(enrolled), list(enrolled.values()))
    top_m = g.identify_many([t for _, t in mated], k=1, threshold=1.0)
    top_n = g.identify_many(non_mated, k=1, threshold=1.0)
    rank1_miss = np.mean([r.candidates[0].subject_id != n for (n, _), r in zip(mated, top_m)])
    print(f"\n1:N on lfw-dev: {len(enrolled)} enrolled, {len(mated)} mated and {len(non_mated)} "
          f"non-mated probes; rank-1 miss rate {rank1_miss:.4f}")
    assert rank1_miss < 0.02
    for fpir in (0.1, 0.01, 0.003):
        t = g.threshold_for(fpir)
        measured = np.mean([r.candidates[0].score >= t for r in top_n])
        fnir = np.mean([r.candidates[0].subject_id != n or r.candidates[0].score < t
                        for (n, _), r in zip(mated, top_m)])
        print(f"FPIR target {fpir}: threshold {t:.4f}, FPIR measured {measured:.4f}, "
              f"FNIR {fnir:.4f}")
        sd = np.sqrt(fpir * (1 - fpir) / len(non_mated))
        assert measured <= fpir + 3 * sd  # the derived threshold holds its FPIR on real searches
