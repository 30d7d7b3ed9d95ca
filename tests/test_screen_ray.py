"""Distributed screening (`matcher screen --ray`): the same output as a local run, resumable
across both, dead workers retried, failures reported clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'matcher[ray]'")

from click.testing import CliRunner

from matcher import screen_ray, screening
from matcher.cli_screen import screen as screen_cmd
from matcher.errors import InputError
from matcher.screening import screen

#: Audit fields that differ between two runs by nature (times, output path, executor).
RUN_FIELDS = {"time_utc", "started_utc", "output", "executor"}


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_cluster):  # conftest.py: a local 2-CPU cluster, driver outside the repository
    return ray_cluster


@pytest.fixture
def extractions(monkeypatch) -> list:
    """The RayExtraction objects screen() creates during the test (to reach their actors)."""
    made = []
    init = screen_ray.RayExtraction.__init__

    def keep(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(screen_ray.RayExtraction, "__init__", keep)
    return made


def _audit(out: Path) -> list[dict]:
    lines = out.with_name(out.name + ".audit.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in RUN_FIELDS} for x in lines]


def _same_run(a: Path, b: Path) -> None:
    """Two screening outputs are the same: rows byte for byte, checkpoint, audit line."""
    assert a.read_bytes() == b.read_bytes()
    ca, cb = (json.loads(p.with_name(p.name + ".progress").read_text()) for p in (a, b))
    assert ca == cb
    assert _audit(a)[-1] == _audit(b)[-1]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, watchlist, mixed_dir):
    out = tmp_path_factory.mktemp("local") / "hits.csv"
    summary = screen(watchlist, mixed_dir, out, workers=1, batch_size=2)
    assert summary.hits >= 3 and summary.failed >= 3  # astronaut + group photo; bad files
    return out, summary


def test_ray_equals_local(tmp_path, watchlist, mixed_dir, local_run):
    out = tmp_path / "hits.csv"
    failures = []
    summary = screen(watchlist, mixed_dir, out, batch_size=2, ray_address="auto",
                     on_failure=lambda *a: failures.append(a))
    _same_run(out, local_run[0])
    assert summary.failures == local_run[1].failures
    assert (summary.hits, summary.faces) == (local_run[1].hits, local_run[1].faces)
    # read failures keep the local run's message (the driver reads, the worker decodes)
    assert any("empty.png" in name and "0 bytes" in msg for name, _, msg in failures)
    ex = json.loads(out.with_name(out.name + ".audit.jsonl").read_text())["executor"]
    assert ex == {"kind": "ray", "address": "auto", "workers": 2, "threads": 1}


def test_driver_memory_is_bounded_by_the_byte_budget(tmp_path, watchlist, mixed_dir, local_run,
                                                     extractions, monkeypatch):
    """With a budget below any batch, one batch at a time is in flight: same output, and the
    driver never held more than the largest batch's files."""
    monkeypatch.setattr(screen_ray, "MAX_INFLIGHT_BYTES", 1)
    out = tmp_path / "hits.csv"
    screen(watchlist, mixed_dir, out, batch_size=2, ray_address="auto")
    _same_run(out, local_run[0])
    probes = screening.open_probes(mixed_dir).probes
    sizes = [screen_ray.data_bytes(screen_ray.with_data(probes[i:i + 2]))
             for i in range(0, len(probes), 2)]
    assert extractions[0].peak_inflight_bytes == max(sizes) > 0
    # the default budget lets every batch of this small folder be in flight together
    monkeypatch.setattr(screen_ray, "MAX_INFLIGHT_BYTES", 1 << 30)
    screen(watchlist, mixed_dir, tmp_path / "again.csv", batch_size=2, ray_address="auto")
    assert extractions[1].peak_inflight_bytes > max(sizes)
    with pytest.raises(InputError, match="max_inflight_bytes"):
        screen_ray.RayExtraction("auto", 1, 1, {}, None, max_inflight_bytes=0)


def test_interrupted_ray_run_resumes_under_ray_or_locally(tmp_path, watchlist, mixed_dir,
                                                          local_run):
    def stop_after_first_batch(s):
        if s.processed >= 2:
            raise KeyboardInterrupt

    for resume_with in ("auto", None):
        out = tmp_path / f"hits-{resume_with}.csv"
        with pytest.raises(KeyboardInterrupt):
            screen(watchlist, mixed_dir, out, batch_size=2, ray_address="auto",
                   progress=stop_after_first_batch)
        assert json.loads(out.with_name(out.name + ".progress").read_text())["done"] == 2
        s = screen(watchlist, mixed_dir, out, batch_size=2, resume=True,
                   ray_address=resume_with, workers=None if resume_with else 1)
        assert s.resumed_from == 2 and s.complete
        assert out.read_bytes() == local_run[0].read_bytes()
        audit = _audit(out)
        assert [a["status"] for a in audit] == ["interrupted", "complete"]
        assert audit[-1]["probes_processed"] == local_run[1].processed


def test_a_killed_worker_is_restarted_and_its_batch_retried(tmp_path, watchlist, mixed_dir,
                                                            local_run, extractions):
    made = extractions
    killed = []

    def kill_one(s):
        if made and not killed and s.processed >= 2:
            ray.kill(made[0].actors[0], no_restart=False)  # as if its node went away
            killed.append(s.processed)

    out = tmp_path / "hits.csv"
    screen(watchlist, mixed_dir, out, batch_size=1, ray_address="auto", progress=kill_one)
    assert killed
    _same_run(out, local_run[0])


def test_workers_that_cannot_start_are_a_clear_error(tmp_path, watchlist, mixed_dir):
    out = tmp_path / "hits.csv"
    with pytest.raises(screen_ray.WorkerError, match="failed to load its engine.*precision"):
        screen(watchlist, mixed_dir, out, ray_address="auto",
               engine_options={"precision": "int4"})
    assert json.loads(out.with_name(out.name + ".audit.jsonl").read_text())["status"] == "failed"
    with pytest.raises(InputError, match="threads"):
        screen(watchlist, mixed_dir, tmp_path / "b.csv", ray_address="auto", threads=0)


def test_a_source_tree_in_the_working_directory_is_refused(tmp_path, watchlist, mixed_dir,
                                                           monkeypatch):
    (tmp_path / "matcher").mkdir()
    (tmp_path / "matcher" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="source tree"):
        screen(watchlist, mixed_dir, tmp_path / "hits.csv", ray_address="auto")


def test_cli_ray_option(tmp_path, watchlist, mixed_dir, local_run):
    out = tmp_path / "hits.csv"
    res = CliRunner().invoke(screen_cmd, ["--watchlist", str(watchlist), "--probes", str(mixed_dir),
                                          "--out", str(out), "--batch-size", "2", "--ray", "auto", "--quality", "none",
                                          "--quiet"], catch_exceptions=False)
    assert res.exit_code == 1, res.output  # hits found
    _same_run(out, local_run[0])


def test_without_ray_the_option_is_a_clear_error(tmp_path, watchlist, mixed_dir):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from matcher.screening import screen\n"
            "from matcher.errors import InputError\n"
            f"try:\n screen({str(watchlist)!r}, {str(mixed_dir)!r}, {str(tmp_path / 'o.csv')!r},"
            " ray_address='auto')\n"
            "except InputError as e:\n print('InputError', e)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert "InputError" in res.stdout and "pip install 'matcher[ray]'" in res.stdout


def test_lfw_dev_batch_equal(tmp_path, lfw_dir, engine):
    """A small lfw-dev batch: watchlist of 20 people, probes are other photos of them and of
    20 people not on it."""
    import csv

    import matcher
    from matcher.datasets import labelled_images

    people = [(n, ps) for n, ps in sorted(labelled_images(lfw_dir / "images").items())
              if len(ps) >= 2][:40]
    g = matcher.Gallery(engine)
    for name, ps in people[:20]:
        g.enroll(name, engine.template(ps[0]))
    wl = tmp_path / "wl.gallery"
    g.save(wl)
    probes = tmp_path / "probes.csv"
    with open(probes, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"])
        for _, ps in people:
            w.writerow([str(ps[1])])
    local, dist = tmp_path / "local.csv", tmp_path / "ray.csv"
    s1 = screen(wl, probes, local, workers=1, batch_size=8, fpir=0.01)
    s2 = screen(wl, probes, dist, batch_size=8, fpir=0.01, ray_address="auto")
    _same_run(dist, local)
    assert s1.hits == s2.hits and s1.hits >= 15, s1.format()  # most mates are found


def test_hung_workers_end_the_run_with_a_clear_error(tmp_path, watchlist, mixed_dir, monkeypatch,
                                                      extractions):
    made = extractions
    monkeypatch.setattr(screening, "BATCH_TIMEOUT", 2.0)

    def hang_all(s):
        if s.processed == 1:
            for a in made[0].actors:
                a.__ray_call__.remote(lambda self: __import__("time").sleep(8))

    out = tmp_path / "hits.csv"
    with pytest.raises(screen_ray.WorkerError, match="no batch finished within 2 s"):
        screen(watchlist, mixed_dir, out, batch_size=1, ray_address="auto", progress=hang_all)
    state = json.loads(out.with_name(out.name + ".progress").read_text())
    assert 1 <= state["done"] < state["probes"] and not state["complete"]

