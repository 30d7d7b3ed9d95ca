"""A verification decision stated at a calibrated operating point."""

from __future__ import annotations

from typing import NamedTuple


class Decision(NamedTuple):
    """Outcome of a 1:1 comparison: ``match`` is ``score >= threshold``, where ``threshold`` is
    the one calibrated for false match rate ``fmr`` on model ``model``. Immutable (a tuple: cheap
    to make on the 1:1 hot path); truthy when it is a match."""

    score: float
    threshold: float
    match: bool
    fmr: float
    model: str

    def __bool__(self) -> bool:
        return self.match
