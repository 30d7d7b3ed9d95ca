"""Batch watchlist screening (matcher.screening, `matcher screen`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import matcher
from matcher.cli_screen import screen as screen_cmd
from matcher.errors import InputError
from matcher.screening import Progress, read_hits, read_templates, screen, write_templates

RNG = np.random.default_rng(7)
OTHERS = 30


def _unit(n: int, rng=RNG) -> np.ndarray:
    v = rng.normal(size=(n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _run(*args: str):
    return CliRunner().invoke(screen_cmd, [str(a) for a in args], catch_exceptions=False)


def _state(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".progress").read_text())


# --------------------------------------------------------------------------- (3) + (4)
# Fixtures others, watchlist and mixed_dir: conftest.py (shared with test_screen_ray.py).
@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, watchlist, mixed_dir):
    out = tmp_path_factory.mktemp("out") / "hits.csv"
    res = _run("--watchlist", watchlist, "--probes", mixed_dir, "--out", out, "--workers", "1",
               "--batch-size", "2")
    return res, out


def test_bad_files_are_counted_not_fatal(mixed_run):
    res, out = mixed_run
    assert res.exit_code == 1, res.output  # the astronaut is on the watchlist
    st = _state(out)
    assert st["complete"] and st["done"] == 6 and st["probes"] == 6  # readme.txt is not a probe
    assert st["failures"] == {"ImageDecodeError": 3, "NoFaceError": 1}
    for name in ("corrupt.jpg", "empty.png", "notes.jpg", "noise.png"):
        assert f"failed: {name}: " in res.stderr
    assert "failures 4: ImageDecodeError 3, NoFaceError 1" in res.stderr
    assert "1 non-image files ignored" in res.stderr
    assert "faces found 3" in res.stderr and "probes/s" in res.stderr
    audit = [json.loads(x) for x in out.with_name("hits.csv.audit.jsonl").read_text().splitlines()]
    assert len(audit) == 1
    a = audit[0]
    assert a["status"] == "complete" and a["probes"] == 6 and a["hits"] == 3
    assert a["failures"] == {"ImageDecodeError": 3, "NoFaceError": 1}
    assert len(a["watchlist_sha256"]) == 64 and a["operating_point"]["fpir"] == 0.003
    assert a["user"] and a["host"] and a["matcher_version"] and a["time_utc"].endswith("+00:00")
    assert "astronaut.jpg" not in json.dumps(a)  # no individual probe paths


def test_group_photo_screens_every_face(mixed_run):
    _, out = mixed_run
    rows = read_hits(out)
    assert [r["probe"] for r in rows] == ["astronaut.jpg", "group/two.png", "group/two.png"]
    group = rows[1:]
    assert sorted(r["face"] for r in group) == ["0", "1"]
    assert all(r["subject_id"] == "astronaut" and r["rank"] == "1" for r in group)
    xs = sorted(float(r["x"]) for r in group)
    assert xs[1] - xs[0] > 400  # one face in each half of the 1024-wide frame
    assert all(float(r["score"]) >= float(r["threshold"]) for r in rows)


def test_workers_processes_give_the_same_rows(tmp_path, watchlist, mixed_dir, mixed_run):
    out = tmp_path / "hits.csv"
    res = _run("--watchlist", watchlist, "--probes", mixed_dir, "--out", out,
               "--workers", "2", "--batch-size", "1", "--quiet")
    assert res.exit_code == 1, res.output
    assert res.stderr == ""  # --quiet
    a, b = read_hits(mixed_run[1]), read_hits(out)
    assert [(r["probe"], r["face"], r["subject_id"]) for r in a] == \
        [(r["probe"], r["face"], r["subject_id"]) for r in b]
    assert np.allclose([float(r["score"]) for r in a], [float(r["score"]) for r in b], atol=2e-3)
    assert _state(out)["failures"] == {"ImageDecodeError": 3, "NoFaceError": 1}


# --------------------------------------------------------------------------- (5) templates
def test_templates_file_probes(tmp_path, engine, watchlist, astronaut_bgr, others):
    tpl = engine.template(astronaut_bgr)
    near = _unit(1, np.random.default_rng(3))[0] * 0.25 + others[4]
    records = [tpl.to_bytes("int8"),
               matcher.Template(near / np.linalg.norm(near), tpl.model, tpl.model_hash).to_bytes(),
               matcher.Template(_unit(1)[0], tpl.model, tpl.model_hash).to_bytes("f16")]
    corrupt = bytearray(tpl.to_bytes())
    corrupt[40] ^= 0xFF  # CRC mismatch
    records.append(bytes(corrupt))
    records.append(matcher.Template(tpl.vector, tpl.model, "0" * 16).to_bytes())  # other model
    path = tmp_path / "probes.mtpl"
    assert write_templates(path, records) == 5
    with open(path, "ab") as f:
        f.write(b"\x10\x00")  # a torn record header
    got = list(read_templates(path))
    assert got[0] == matcher.Template.from_bytes(records[0])
    assert [type(x).__name__ for x in got[3:]] == ["TemplateFormatError", "Template",
                                                   "TemplateFormatError"]

    out = tmp_path / "hits.jsonl"
    s = screen(watchlist, path, out, jsonl=True, threshold=0.5, top_k=2)
    rows = read_hits(out)
    assert [(r["probe"], r["subject_id"], r["face"], r["x"]) for r in rows] == \
        [("#0", "astronaut", "0", ""), ("#1", "S04", "0", "")]
    assert s.faces == 3 and s.hits == 2 and s.processed == s.probes == 6
    assert s.failures == {"TemplateFormatError": 2, "ModelMismatchError": 1}
    # the same decisions as Gallery.identify_many on the same templates
    g = matcher.Gallery.load(watchlist)
    ids = g.identify_many([x for x in got[:3]], 2, None, threshold=0.5)
    expect = [(f"#{i}", c.subject_id, round(c.score, 6)) for i, r in enumerate(ids)
              for c in r.candidates if c.score >= 0.5]
    assert [(r["probe"], r["subject_id"], float(r["score"])) for r in rows] == expect


# --------------------------------------------------------------------------- resume
def test_interrupted_run_resumes_without_repeats_or_losses(tmp_path, watchlist, others):
    vecs = others[np.arange(12) % OTHERS] + 0.3 * _unit(12, np.random.default_rng(5))
    g = matcher.Gallery.load(watchlist)
    probes = tmp_path / "p.mtpl"
    write_templates(probes, [matcher.Template(v / np.linalg.norm(v), g.model, g.model_hash)
                             for v in vecs])
    ref = tmp_path / "ref.csv"
    screen(watchlist, probes, ref, threshold=0.3, batch_size=2, audit=False)

    out = tmp_path / "hits.csv"

    def stop(s):
        if s.processed >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        screen(watchlist, probes, out, threshold=0.3, batch_size=2, progress=stop)
    assert _state(out)["done"] == 6 and not _state(out)["complete"]
    with open(out, "ab") as f:
        f.write(b"#6,0,,,,,S0")  # a torn row after the checkpoint: resume must drop it
    with pytest.raises(InputError, match="already exists"):
        screen(watchlist, probes, out, threshold=0.3, batch_size=2)
    with pytest.raises(InputError, match="threshold"):
        screen(watchlist, probes, out, threshold=0.31, batch_size=2, resume=True)
    s = screen(watchlist, probes, out, threshold=0.3, batch_size=2, resume=True)
    assert s.resumed_from == 6 and s.processed == 12 and s.complete
    assert out.read_bytes() == ref.read_bytes()
    audit = [json.loads(x) for x in (tmp_path / "hits.csv.audit.jsonl").read_text().splitlines()]
    assert [a["status"] for a in audit] == ["interrupted", "complete"]  # refusals: no run
    assert audit[-1]["resumed"] and audit[-1]["processed_this_run"] == 6


RUNNER = """
import sys, time
import matcher.engine as me
_orig = me.Engine.face_templates
def _slow(self, image, **kw):
    time.sleep(float(sys.argv[1]))
    return _orig(self, image, **kw)
me.Engine.face_templates = _slow
from matcher.cli_screen import screen
screen.main(sys.argv[2:], prog_name="matcher screen")
"""


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, watchlist, astronaut_bgr):
    d = tmp_path / "probes"
    d.mkdir()
    small = cv2.resize(astronaut_bgr, (256, 256))
    for i in range(16):  # distinct frames of the same face (+ a few without one)
        img = np.roll(small, 4 * i, axis=1) if i % 5 else np.full_like(small, 10 * i)
        cv2.imwrite(str(d / f"p{i:02d}.jpg"), img)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    out, ref = tmp_path / "hits.csv", tmp_path / "ref.csv"
    args = ["--watchlist", str(watchlist), "--probes", str(d), "--out", str(out),
            "--workers", "1", "--batch-size", "2", "--threshold", "0.3", "--quiet",
            "--quality", "none"]  # 256 px frames: the probe policy would turn these away
    proc = subprocess.Popen([sys.executable, str(runner), "0.25", *args])
    ckpt = tmp_path / "hits.csv.progress"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                if json.loads(ckpt.read_text())["done"] >= 4:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert proc.poll() is None, "the screen finished before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = json.loads(ckpt.read_text())["done"]
    assert 4 <= done < 16
    resumed = subprocess.run([sys.executable, str(runner), "0", *args, "--resume"],
                             check=False, timeout=300)
    assert resumed.returncode == 1
    res = _run(*[a if a != str(out) else str(ref) for a in args])
    assert res.exit_code == 1, res.output
    rows = read_hits(out)
    assert rows == read_hits(ref)
    keys = [(r["probe"], r["face"], r["rank"]) for r in rows]
    assert len(keys) == len(set(keys)) == 12  # 16 probes minus 4 without a face
    st = json.loads(ckpt.read_text())
    assert st["complete"] and st["failures"] == {"NoFaceError": 4} and st["hits"] == 12


# --------------------------------------------------------------------------- (6) CLI
def test_help_documents_options_and_exit_status():
    res = _run("--help")
    assert res.exit_code == 0
    text = res.output
    assert "Exit status: 0 no hits, 1 hits found, 2 failure" in " ".join(text.split())
    for opt in ("--watchlist", "--key-file", "--probes", "--out", "--jsonl", "--fpir",
                "--threshold", "--top-k", "--workers", "--batch-size", "--resume", "--quiet",
                "--audit"):
        assert opt in text
    params = [p for p in screen_cmd.params if p.name != "help"]
    assert all("Example:" in p.help for p in params)


def test_exit_codes(tmp_path, watchlist, engine, astronaut_bgr):
    probes = tmp_path / "p.mtpl"
    write_templates(probes, [matcher.Template(v, engine.model, engine.model_hash)
                             for v in _unit(3, np.random.default_rng(11))])
    r0 = _run("--watchlist", watchlist, "--probes", probes, "--out", tmp_path / "a.csv")
    assert r0.exit_code == 0, r0.output  # random vectors hit nobody
    assert "hits 0" in r0.stderr
    # exists without --resume; --resume of a finished run changes nothing and keeps the status
    r2 = _run("--watchlist", watchlist, "--probes", probes, "--out", tmp_path / "a.csv")
    assert r2.exit_code == 2 and "already exists" in r2.stderr
    r0b = _run("--watchlist", watchlist, "--probes", probes, "--out", tmp_path / "a.csv",
               "--resume")
    assert r0b.exit_code == 0
    assert _run("--watchlist", tmp_path / "missing.gallery", "--probes", probes,
                "--out", tmp_path / "b.csv").exit_code == 2
    both = _run("--watchlist", watchlist, "--probes", probes, "--out", tmp_path / "c.csv",
                "--fpir", "0.003", "--threshold", "0.5")
    assert both.exit_code == 2 and "not both" in both.stderr
    bad = tmp_path / "list.csv"
    bad.write_text("file\nx.jpg\n")
    r = _run("--watchlist", watchlist, "--probes", bad, "--out", tmp_path / "d.csv")
    assert r.exit_code == 2 and "'path' column" in r.stderr
    # a CSV probe list: relative paths against the CSV's folder
    cv2.imwrite(str(tmp_path / "face.jpg"), cv2.resize(astronaut_bgr, (384, 384)))
    (tmp_path / "list2.csv").write_text("id,path\n1,face.jpg\n2,\n3,gone.jpg\n")
    r1 = _run("--watchlist", watchlist, "--probes", tmp_path / "list2.csv",
              "--out", tmp_path / "e.csv", "--workers", "1")
    assert r1.exit_code == 1, r1.output
    assert [x["probe"] for x in read_hits(tmp_path / "e.csv")] == ["face.jpg"]
    assert _state(tmp_path / "e.csv")["failures"] == {"InputError": 1, "ImageDecodeError": 1}


def test_plain_progress_lines():
    import io

    from matcher.screening import ScreenSummary

    buf = io.StringIO()
    p = Progress(10, stream=buf, interval=0.0, tty=False)
    for done in (0, 4, 10):
        p(ScreenSummary(probes=10, processed=done, hits=1))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("screen: 10/10 probes") and "ETA" in lines[0]
    bar_out = io.StringIO()
    bar = Progress(10, 2, stream=bar_out, tty=True)  # a terminal gets a tqdm bar
    bar(ScreenSummary(probes=10, processed=6, hits=1))
    bar.close()
    assert "6/10" in bar_out.getvalue() and "probe/s" in bar_out.getvalue()


# --------------------------------------------------------------------------- (1) lfw-dev
def test_lfw_end_to_end_matches_identify_many(tmp_path, lfw_dir, engine):
    from matcher.datasets import labelled_images

    people = labelled_images(lfw_dir / "images")
    multi = sorted(p for p, f in people.items() if len(f) >= 2)
    single = sorted(p for p, f in people.items() if len(f) == 1)
    listed = multi[:: max(1, len(multi) // 20)][:20]
    strangers = single[:: max(1, len(single) // 40)][:40]
    g = matcher.Gallery(engine)
    for p in listed:
        g.enroll(p, engine.template(people[p][0]))
    wl = tmp_path / "wl.gallery"
    g.save(wl)
    paths = [people[p][1] for p in listed] + [people[p][0] for p in strangers]
    csv_path = tmp_path / "probes.csv"
    csv_path.write_text("path\n" + "".join(f"{os.path.relpath(p, tmp_path)}\n" for p in paths))

    out = tmp_path / "hits.csv"
    s = screen(wl, csv_path, out, fpir=0.01, top_k=3, engine=engine, workers=1, batch_size=16)
    rows = read_hits(out)

    expect = []
    thr = g.threshold_for(0.01)
    for p in paths:
        found = engine.face_templates(p)
        ids = g.identify_many([t for _, t in found], 3, 0.01) if found else []
        for i, r in enumerate(ids):
            assert r.threshold == thr
            expect += [(os.path.relpath(p, tmp_path), str(i), c.subject_id, str(c.rank),
                        f"{c.score:.6f}") for c in r.candidates if c.score >= r.threshold]
    assert [(r["probe"], r["face"], r["subject_id"], r["rank"], r["score"]) for r in rows] == expect
    assert s.processed == 60 and not s.failures and s.hits == len(expect)
    mated = {r["probe"] for r in rows if r["rank"] == "1"
             and r["subject_id"] == Path(r["probe"]).parent.name}
    assert len(mated) >= 18, f"only {len(mated)}/20 mated probes hit their own subject"
    print(f"\nlfw screen: {s.faces} faces in 60 probes, {s.hits} hits, {len(mated)}/20 mated "
          f"rank-1, threshold {thr:.4f} (FPIR 0.01, N=20)")


def test_quality_failures_are_counted_by_reason(tmp_path, watchlist, astronaut_bgr):
    d = tmp_path / "probes"
    d.mkdir()
    cv2.imwrite(str(d / "small.jpg"), cv2.resize(astronaut_bgr, (160, 160)))  # eyes ~14 px apart
    cv2.imwrite(str(d / "fine.jpg"), astronaut_bgr)
    s = screen(watchlist, d, tmp_path / "hits.csv", threshold=0.3, quality="probe")
    assert s.failures == {"QualityError (move closer)": 1}
    s = screen(watchlist, d, tmp_path / "all.csv", threshold=0.3, quality=None)
    assert not s.failures


# --------------------------------------------------------------------------- review findings
def _interrupted(watchlist, probes, out, after: int = 1) -> None:
    """A screen stopped (as by Ctrl-C) after ``after`` checkpoints."""
    calls = []

    def stop(_summary):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        screen(watchlist, probes, out, batch_size=1, workers=1, threshold=0.3, progress=stop,
               audit=False)


def test_resume_refuses_another_templates_file_of_the_same_length(tmp_path, watchlist, others):
    wl = matcher.Gallery.load(watchlist)
    a, b = tmp_path / "a.mtpl", tmp_path / "b.mtpl"
    write_templates(a, [matcher.Template(v, wl.model, wl.model_hash) for v in others[:3]])
    write_templates(b, [matcher.Template(v, wl.model, wl.model_hash) for v in others[3:6]])
    out = tmp_path / "hits.csv"
    _interrupted(watchlist, a, out)
    with pytest.raises(InputError, match="probe_fingerprint"):
        screen(watchlist, b, out, resume=True, threshold=0.3, audit=False)
    s = screen(watchlist, a, out, resume=True, threshold=0.3, audit=False)
    assert s.complete and [r["subject_id"] for r in read_hits(out)] == ["S00", "S01", "S02"]


def test_resume_refuses_another_directory_with_the_same_names(tmp_path, watchlist, mixed_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(mixed_dir, copy)
    out = tmp_path / "hits.csv"
    _interrupted(watchlist, mixed_dir, out)
    with pytest.raises(InputError, match="probe_fingerprint"):
        screen(watchlist, copy, out, resume=True, threshold=0.3, audit=False)


def test_a_record_of_the_wrong_dimension_fails_alone(tmp_path, watchlist, others):
    wl = matcher.Gallery.load(watchlist)
    path = tmp_path / "p.mtpl"
    short = np.ones(64, np.float32) / 8
    write_templates(path, [matcher.Template(others[0], wl.model, wl.model_hash),
                           matcher.Template(short, wl.model, wl.model_hash),
                           matcher.Template(others[1], wl.model, wl.model_hash)])
    out = tmp_path / "hits.csv"
    s = screen(watchlist, path, out, threshold=0.3, audit=False)
    assert s.complete and s.failures == {"TemplateError": 1} and s.faces == 2
    assert [(r["probe"], r["subject_id"]) for r in read_hits(out)] == [("#0", "S00"), ("#2", "S01")]


def test_probes_with_hits_counts_listed_probes_whatever_the_batch(tmp_path, watchlist, mixed_dir):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path\n" + f"{mixed_dir / 'astronaut.jpg'}\n" * 2
                        + "\n" + ",\n")  # a blank line, then an empty path on line 5
    counts = []
    for bs in (1, 4):
        failures = []
        s = screen(watchlist, csv_path, tmp_path / f"b{bs}.csv", batch_size=bs, audit=False,
                   on_failure=lambda *a, f=failures: f.append(a))
        counts.append((s.hits, s.probes_with_hits))
        assert [f[0] for f in failures] == ["<line 5>"]
    assert counts == [(2, 2), (2, 2)]


def test_a_damaged_checkpoint_is_a_typed_error(tmp_path, watchlist, mixed_dir):
    out = tmp_path / "hits.csv"
    _interrupted(watchlist, mixed_dir, out)
    ckpt = out.with_name("hits.csv.progress")
    good = json.loads(ckpt.read_text())
    for bad in ("[]", "3", json.dumps({k: v for k, v in good.items() if k != "offset"}),
                json.dumps({**good, "done": -1})):
        ckpt.write_text(bad)
        with pytest.raises(InputError, match="cannot resume"):
            screen(watchlist, mixed_dir, out, resume=True, threshold=0.3, audit=False)


def test_a_dangling_link_is_a_failed_probe(tmp_path, watchlist, astronaut_bgr):
    d = tmp_path / "probes"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), astronaut_bgr)
    os.symlink(d / "gone.jpg", d / "b.jpg")
    failures = []
    s = screen(watchlist, d, tmp_path / "hits.csv", audit=False,
               on_failure=lambda *a: failures.append(a))
    assert s.probes == 2 and s.hits == 1 and [f[:2] for f in failures] == [("b.jpg", "ImageDecodeError")]


def test_face_numbers_survive_the_quality_policy(tmp_path, watchlist, astronaut_bgr):
    """A group photo whose first face fails the policy: the passing face keeps its number."""
    big = cv2.resize(astronaut_bgr, (512, 512))
    dark = (big * 0.25).astype(np.uint8)
    d = tmp_path / "probes"
    d.mkdir()
    cv2.imwrite(str(d / "g.png"), np.concatenate([dark, big], 1))
    eng = matcher.Engine()
    found = eng.face_templates(cv2.imread(str(d / "g.png")), quality="probe")
    ok = [i for i, (_, t) in enumerate(found) if isinstance(t, matcher.Template)]
    assert len(found) == 2 and len(ok) == 1, found  # the premise: one face passes, one fails
    rows = {}
    for q in ("probe", None):
        s = screen(watchlist, d, tmp_path / f"{q}.csv", threshold=0.3, quality=q, audit=False)
        rows[q] = [(r["face"], r["x"]) for r in read_hits(tmp_path / f"{q}.csv")]
        assert s.faces_rejected == (1 if q else 0) and not s.failures
    assert rows["probe"] == [x for x in rows[None] if x[0] == str(ok[0])]
