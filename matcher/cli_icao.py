"""``matcher verify-doc``: a live face against the portrait of an e-passport chip (ICAO 9303 DG2).

Registered on the ``matcher`` group in :mod:`matcher.cli` with
``main.add_command(verify_doc, "verify-doc")``.
"""

from __future__ import annotations

import click

from matcher.cli_common import engine_from_options, engine_options, exit_with_decision, fail
from matcher.errors import MatcherError
from matcher.icao import MAX_DG2_BYTES


@click.command("verify-doc")
@click.argument("live", type=click.Path(dir_okay=False))
@click.argument("dg2", type=click.Path(dir_okay=False))
@click.option("--fmr", type=float, default=1e-3, show_default=True,
              help="Target false match rate (a calibrated point: 1e-2, 1e-3, 1e-4, 1e-5).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@engine_options
def verify_doc(live: str, dg2: str, fmr: float, as_json: bool, backend: str, precision: str,
               threads: int | None) -> None:
    """Is the face in LIVE the holder of the e-passport whose Data Group 2 is in DG2?

    DG2 is the raw LDS data group read from the chip (tag 75: ISO/IEC 19794-5 facial record,
    JPEG or JPEG 2000); its first portrait is compared.

    Exit status: 0 match, 1 no match, 2 error (reason on stderr).

    Example: matcher verify-doc live.jpg dg2.bin --fmr 1e-3
    """
    from matcher.icao import verify_document

    # Handles its own errors, so it behaves the same on the `matcher` group or on its own.
    try:
        with open(dg2, "rb") as fh:
            data = fh.read(MAX_DG2_BYTES + 1)  # read_dg2 refuses anything longer
        d = verify_document(engine_from_options(backend, precision, threads), live, data, fmr=fmr)
    except (MatcherError, OSError) as exc:
        fail(exc)
    exit_with_decision(d, as_json)
