"""Ramparts' own corpus: `data/ramparts.json`, shipped in the package.

The file holds `attacks` (one JSON object a line: `id`, `category`, `text`, `goal`, and
optionally `planted`, the synthetic personal data or fake secrets the text carries, and
`note`) and `payloads`: one short objective per line, by goal, that fills the slot of a
third-party jailbreak template. A line that carries a fake secret says
`pragma: allowlist secret` in its `note`, for the repository's secret scan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ramparts.tabletop.corpora.model import CATEGORIES, GOALS, Attack, CorpusError

__all__ = ["DATA_FILE", "LICENCE", "OwnCorpus", "Payload", "load_own", "parse_own"]

DATA_FILE = "ramparts/tabletop/corpora/data/ramparts.json"
LICENCE = "Apache-2.0"  # the project's own
_FORMAT = 1
_REQUIRED = frozenset({"id", "category", "text", "goal"})
_OPTIONAL = frozenset({"planted", "note"})


@dataclass(frozen=True)
class Payload:
    """An attack objective in one sentence, for a template's slot."""

    id: str
    goal: str
    text: str


@dataclass(frozen=True)
class OwnCorpus:
    attacks: tuple[Attack, ...]
    payloads: tuple[Payload, ...]
    #: Each attack's planted synthetic values (by attack id): what must never reach a model.
    planted: dict[str, tuple[str, ...]]


def load_own() -> OwnCorpus:
    """Read and check the shipped file; a damaged one is a `CorpusError`."""
    shipped = resources.files("ramparts.tabletop.corpora").joinpath("data/ramparts.json")
    try:
        text = shipped.read_text(encoding="utf-8")
    except OSError as error:
        raise CorpusError(f"{DATA_FILE} cannot be read: {error}") from error
    return parse_own(text)


def parse_own(text: str) -> OwnCorpus:
    """The corpus a file of this format holds, checked entry by entry."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise CorpusError(f"{DATA_FILE} is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise CorpusError(f"{DATA_FILE}: not a format-{_FORMAT} corpus")
    attacks, planted = _attacks(document.get("attacks"))
    return OwnCorpus(attacks, _payloads(document.get("payloads")), planted)


def _attacks(entries: Any) -> tuple[tuple[Attack, ...], dict[str, tuple[str, ...]]]:
    if not isinstance(entries, list) or not entries:
        raise CorpusError(f"{DATA_FILE}: `attacks` must be a non-empty list")
    attacks: list[Attack] = []
    planted: dict[str, tuple[str, ...]] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{DATA_FILE}: attack {number}"
        if not isinstance(entry, dict) or not _REQUIRED <= entry.keys() <= _REQUIRED | _OPTIONAL:
            raise CorpusError(f"{where}: needs exactly {sorted(_REQUIRED)} (+ {sorted(_OPTIONAL)})")
        if not all(isinstance(entry[key], str) and entry[key] for key in _REQUIRED):
            raise CorpusError(f"{where}: {sorted(_REQUIRED)} must be non-empty strings")
        attack_id, category, goal = entry["id"], entry["category"], entry["goal"]
        if attack_id in planted:
            raise CorpusError(f"{where}: id {attack_id!r} is used twice")
        if category not in CATEGORIES or goal not in GOALS:
            raise CorpusError(f"{where}: unknown category {category!r} or goal {goal!r}")
        if (category == "benign") != (goal == "benign"):
            raise CorpusError(f"{where}: only the benign category has the benign goal")
        values = entry.get("planted", [])
        if not isinstance(values, list) or not all(
            isinstance(value, str) and value and value in entry["text"] for value in values
        ):
            raise CorpusError(f"{where}: `planted` must list values its text holds")
        planted[attack_id] = tuple(values)
        attacks.append(
            Attack(
                id=attack_id,
                category=category,
                text=entry["text"],
                goal=goal,
                source="ramparts",
                licence=LICENCE,
                origin=DATA_FILE,
            )
        )
    return tuple(attacks), planted


def _payloads(entries: Any) -> tuple[Payload, ...]:
    if not isinstance(entries, list):
        raise CorpusError(f"{DATA_FILE}: `payloads` must be a list")
    payloads = []
    for number, entry in enumerate(entries, 1):
        if (
            not isinstance(entry, dict)
            or entry.keys() != {"id", "goal", "text"}
            or entry["goal"] not in GOALS
            or entry["goal"] == "benign"
            or not isinstance(entry["text"], str)
        ):
            raise CorpusError(f"{DATA_FILE}: payload {number} needs id, an attack goal and text")
        payloads.append(Payload(str(entry["id"]), entry["goal"], entry["text"]))
    if {payload.goal for payload in payloads} != set(GOALS) - {"benign"}:
        raise CorpusError(f"{DATA_FILE}: `payloads` must cover every attack goal")
    return tuple(payloads)
