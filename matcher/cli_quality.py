"""Quality commands of the ``matcher`` command line: ``matcher quality`` and ``matcher erc``.

Registered in :mod:`matcher.cli` with ``main.add_command(quality)`` and ``main.add_command(erc)``.
Errors (:class:`MatcherError`) are reported by the main group (exit 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from matcher.cli_common import engine_from_options, engine_options


@click.command("quality")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Choice(["enrol", "probe"]), default="probe",
              show_default=True, help="Quality policy of the model card.")
@click.option("--json", "as_json", is_flag=True, help="Print the full assessment as JSON.")
@engine_options
def quality(image: str, policy: str, as_json: bool, backend: str, precision: str,
            threads: int | None) -> None:
    """Assess the quality of the primary face in IMAGE (exit 0 pass, 1 fail, 2 error)."""
    q = engine_from_options(backend, precision, threads).quality(image, policy=policy)
    if as_json:
        click.echo(json.dumps(q.as_dict(), indent=2))
    else:
        verdict = "pass" if q.passed else f"FAIL: {q.advice}"
        click.echo(f"quality {q.score:.1f}/100 under policy {policy}: {verdict}")
        for c in q.components.values():
            mark = " " if c.passed else "x"
            click.echo(f" {mark} {c.name:12s} {c.value:10.2f}  {c.unit}")
        for r in q.reasons:
            click.echo(f"   {r}")
    sys.exit(0 if q.passed else 1)


@click.command("erc")
@click.argument("data", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--out", type=click.Path(file_okay=False), default="erc", show_default=True,
              help="Directory for erc.json and erc.png.")
@click.option("--fmr", type=float, default=1e-3, show_default=True,
              help="FMR whose threshold (from all comparisons) the curves are read at.")
@engine_options
def erc(data: str | None, out: str, fmr: float, backend: str, precision: str,
        threads: int | None) -> None:
    """Error-versus-reject curves of the quality score and each component (default: lfw-dev).

    FNMR at the FMR threshold as the lowest-quality 0..20% of genuine comparisons are rejected
    (a comparison's quality: the lower of its two images'), against random rejection.

    Example: matcher erc ../shared/data/lfw-dev --out erc-lfw
    """
    from matcher.datasets import default_lfw_dir
    from matcher.erc import compute_erc, format_erc, write_erc

    root = Path(data) if data else default_lfw_dir()
    if root is None:
        raise click.UsageError("no data: pass DATA or set MATCHER_LFW_DIR")
    report = compute_erc(engine_from_options(backend, precision, threads), root, fmr=fmr,
                         progress=sys.stderr.isatty())
    js, png = write_erc(report, Path(out))
    click.echo(format_erc(report))
    click.echo(f"written {js} and {png}", err=True)
