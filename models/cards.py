"""Model cards: the facts about each model, read from the JSON files shipped beside this module."""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Any

from matcher.errors import ModelError


@dataclass(frozen=True)
class ModelCard:
    """One model's card: where it comes from, what it takes and what it gives."""

    id: str
    kind: str  # "detector" | "recognizer"
    source: dict[str, str]
    license: str
    input: dict[str, Any]
    output: dict[str, Any]
    prepared_sha256: str | None = None
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_size(self) -> int:
        return int(self.output["embedding_size"])


_FIELDS = {"id", "kind", "source", "license", "input", "output", "prepared_sha256", "dynamic_axes"}


@functools.cache
def load_card(model_id: str) -> ModelCard:
    """Read the card of ``model_id`` (e.g. ``"sface-2021dec"``)."""
    res = importlib.resources.files(__package__) / f"{model_id}.json"
    if not res.is_file():
        raise ModelError(f"no model card for {model_id!r}; known: {', '.join(card_ids())}")
    raw = json.loads(res.read_text(encoding="utf-8"))
    extra = {k: v for k, v in raw.items() if k not in _FIELDS}
    return ModelCard(**{k: v for k, v in raw.items() if k in _FIELDS}, extra=extra)


def card_ids() -> list[str]:
    """Ids of every shipped card."""
    root = importlib.resources.files(__package__)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))
