"""SFace per precision on this CPU: latency on one thread and template agreement with fp32.

    python benchmarks/precision_report.py               # fp32 / bf16 (+ int8 if nncf is installed)
    pip install nncf==3.4.0 && python benchmarks/precision_report.py --calibration 300

Rows: ONNX Runtime fp32; OpenVINO fp32; OpenVINO bf16 (where the CPU has it); and, with NNCF
installed, an OpenVINO int8 model made by NNCF post-training quantisation (``nncf.quantize``,
performance preset) of the same prepared file. Calibration faces come from lfw-dev people who
appear in no View-2 pair; the agreement faces from View-2 people, so the two never overlap.
Reported per row: median and p99 of one-face inference (1 thread, 1 stream, aligned 112x112
crops), and the cosine of its templates to OpenVINO fp32 templates of the same faces (min,
median). A precision whose minimum is below 0.999 would need its own model id and calibration
(issue 6). This is the measurement to repeat on a CPU with AMX before offering int8.
Requires ../shared/data/lfw-dev (or $MATCHER_LFW_DIR).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np
from matcher.models import prepare
from matcher.models.cards import load_card

import matcher
from matcher.backends import cpu_supports_bf16
from matcher.datasets import default_lfw_dir, labelled_images, read_pairs


def crops(eng: matcher.Engine, paths: list) -> np.ndarray:
    """Aligned primary-face crops (N, 3, 112, 112) of the images that have a face."""
    batch = eng.recognizer.new_batch(len(paths))
    ok = []
    for i, p in enumerate(paths):
        try:
            eng.align_primary(p, batch, i)
            ok.append(i)
        except matcher.errors.MatcherError:
            pass
    return batch[ok]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=200, help="faces for agreement and timing")
    ap.add_argument("--calibration", type=int, default=300, help="int8 calibration faces")
    args = ap.parse_args()
    root = default_lfw_dir()
    if root is None:
        raise SystemExit("lfw-dev not found: set MATCHER_LFW_DIR")
    import onnxruntime as ort
    import openvino as ov

    paired = {p.a.parent.name for p in read_pairs(root)} | {p.b.parent.name
                                                             for p in read_pairs(root)}
    people = labelled_images(root / "images")
    test_paths = [p for n, ps in sorted(people.items()) if n in paired for p in ps][: args.faces]
    cal_pool = [p for n, ps in sorted(people.items()) if n not in paired for p in ps]
    rng = np.random.default_rng(0)
    cal_paths = [cal_pool[i] for i in rng.choice(len(cal_pool), min(args.calibration,
                                                                     len(cal_pool)), replace=False)]
    eng = matcher.Engine(precision="fp32", threads=1)
    faces = crops(eng, test_paths)
    path = str(prepare.prepared_path(load_card("sface-2021dec")))
    core = ov.Core()

    def ov_infer(model, hint):
        c = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                              "PERFORMANCE_HINT": "LATENCY",
                                              "INFERENCE_PRECISION_HINT": hint})
        r = c.create_infer_request()
        return lambda x: r.infer({0: x})[0].copy()

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    rows = {"onnxruntime fp32": lambda x: sess.run(None, {"data": x})[0],
            "openvino fp32": ov_infer(core.read_model(path), "f32")}
    if cpu_supports_bf16():
        rows["openvino bf16"] = ov_infer(core.read_model(path), "bf16")
    if importlib.util.find_spec("nncf") is not None:
        import nncf

        cal = crops(eng, cal_paths)
        t = time.perf_counter()
        q = nncf.quantize(core.read_model(path), nncf.Dataset(list(cal), lambda x: x[None]),
                          subset_size=len(cal), preset=nncf.QuantizationPreset.PERFORMANCE)
        print(f"nncf int8: {len(cal)} calibration faces, quantised in "
              f"{time.perf_counter() - t:.1f} s")
        rows["openvino int8 (nncf)"] = ov_infer(q, "f32")
    else:
        print("nncf not installed: no int8 row (pip install nncf==3.4.0)")

    ref = None
    print(f"\n{len(faces)} aligned lfw-dev faces, 1 thread\n")
    print(f"{'precision':24s} {'median ms':>10s} {'p99 ms':>8s} {'cos min':>8s} {'cos median':>11s}")
    for name, fn in (("openvino fp32", rows.pop("openvino fp32")), *rows.items()):
        emb = np.concatenate([fn(x[None]) for x in faces])
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ref = emb if ref is None else ref
        ts = []
        for _ in range(2):
            for x in faces[:100]:
                t = time.perf_counter()
                fn(x[None])
                ts.append(time.perf_counter() - t)
        cos = (emb * ref).sum(1)
        print(f"{name:24s} {1e3 * np.median(ts):10.2f} {1e3 * np.percentile(ts, 99):8.2f} "
              f"{cos.min():8.4f} {np.median(cos):11.5f}")


if __name__ == "__main__":
    main()
