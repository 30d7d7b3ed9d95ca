"""`matcher bench --quick` writes its Markdown report (every section, positive figures) and PNGs."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from matcher import bench as b
from matcher.cli_bench import bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(bench, ["--quick", "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return out, result.output


def test_markdown_has_every_section(report):
    out, _ = report
    text = (out / b.REPORT).read_text()
    for section in b.SECTIONS:
        assert section in text, section
    assert "Command: `matcher bench --out" in text and "--quick" in text
    assert "CPU: " in text and '"simd"' in text and '"backend"' in text
    for png in b.PLOTS:
        assert f"({png})" in text


def test_pngs_are_written(report):
    out, _ = report
    for png in b.PLOTS:
        data = (out / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, png


def _tables(text):
    """Numeric cells of every Markdown table row (header and separator rows excluded)."""
    cells = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells += [c.strip() for c in line.strip("|").split("|")]
    return cells


def test_figures_are_positive_numbers(report):
    out, _ = report
    text = (out / b.REPORT).read_text()
    numbers = [c for c in _tables(text) if re.fullmatch(r"[0-9][0-9.]*(?:e[+-]?[0-9]+)?", c)]
    assert len(numbers) > 40
    for c in numbers:
        assert float(c) > 0, c
    res = json.loads((out / b.RESULTS).read_text())
    for r in res["stages"]["rows"]:
        m = r["matcher"]
        assert 0 < m["median_ms"] <= m["p95_ms"] <= m["p99_ms"]
    for side in ("one_to_one", "one_to_n"):
        for who in ("matcher", "opencv"):
            assert res["transactions"][side][who]["median_ms"] > 0
    assert [r["n"] for r in res["scaling"]["rows"]] == [100, 1000]
    ks = sorted({r["k"] for r in res["concurrency"]["rows"]})
    assert ks == [1, 2, 4, 8]
    assert all(r["throughput_tps"] > 0 and 0 < r["median_ms"] <= r["p95_ms"] <= r["p99_ms"]
               for r in res["concurrency"]["rows"])
    assert "| p50 ms | p95 ms | p99 ms |" in text
    assert res["environment"]["engine"]["threads"] >= 1


def test_terminal_summary(report):
    _, output = report
    assert "1:1 transaction: matcher" in output and "report:" in output
