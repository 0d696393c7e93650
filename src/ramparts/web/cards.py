"""PAY-1: no card number reaches a route. Card details are typed only into the PSP's own fields
(SAQ A), so a request that holds one anyway is refused at the edge, before anything can store
or log it.

A card number here is a Luhn-valid run of 13 to 19 digits, in any script (full-width, Arabic-
Indic), the digits possibly separated by up to three spaces, tabs, dashes, dots, slashes,
underscores or commas ("4242 4242 4242 4242", "4242.4242.4242.4242"), invisible characters
ignored, anywhere in a JSON string, number or key, a form field or a query parameter. A run
is tried whole and cut where its separators are, so "4242424242424242 123" (a number with
its security code) is found.

What keeps ordinary values from being refused by chance (one in ten digit strings passes
Luhn): a run must stand apart from letters (digits inside a hex token or an id such as
`ab12…` are not a card number), and UUIDs are skipped (the last two groups of one can be
sixteen digits joined by a dash).

The refusal names where the number was (`card.number`, `items[2].note`, query parameter
`pan`), never the value: the problem, the logs and the audit trail only ever see the field.

Trying every stretch costs a Luhn check per candidate, about seven per digit in a run of
single digits ("1 1 1 …"): one body of them under the size limit held the event loop for
minutes. So a body, a query or a path is checked for at most `MAX_CANDIDATES` candidates, and
one with more is refused as if it held a card number: each candidate passes Luhn one time in
ten, so an ordinary value with that many is refused by chance long before.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from ramparts.detectors import luhn_valid
from ramparts.problems import Problem, ProblemType

__all__ = [
    "MAX_CANDIDATES",
    "check_form_fields",
    "check_json_document",
    "check_path",
    "check_query",
    "holds_card_number",
]

_SHORTEST, _LONGEST = 13, 19
# Digits with at most one space or dash between two of them, not touching a letter.
_RUN = re.compile(r"(?<![A-Za-z0-9])\d(?:[ -]?\d)*(?![A-Za-z0-9])", re.ASCII)
# A UUID standing on its own: one glued to more digits is not one (the card before it keeps
# its digits).
_UUID = re.compile(
    r"(?<![0-9a-z-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-z])",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"(?<=\d)[\s\-._/,\u2010-\u2015\u2212]{1,3}(?=\d)")
_SEPARATOR = re.compile(r"[ -]")
_SHOWN_NAME = 100
#: The most candidate numbers one body, query or path is checked for (a few milliseconds).
MAX_CANDIDATES = 4096


class _TooManyCandidatesError(Exception):
    """A request's values hold more candidate numbers than `MAX_CANDIDATES`."""


class _Scan:
    """One request's search for card numbers, within its budget of candidates."""

    def __init__(self, budget: float = MAX_CANDIDATES) -> None:
        self.left = budget

    def holds(self, text: str) -> bool:
        """Whether `text` holds what looks like a card number (see the module docstring);
        `_TooManyCandidatesError` when the budget runs out first."""
        if sum(c.isdigit() for c in text) < _SHORTEST:
            return False  # most values: nothing to look at
        # UUIDs out first, then up to three separators between two digits read as one space.
        spaced = _SEPARATORS.sub(" ", _UUID.sub(" ", _folded(text)))
        for found in _RUN.finditer(spaced):
            run = found.group()
            if sum(c.isdigit() for c in run) < _SHORTEST:
                continue
            for candidate in _candidates(run):
                self.left -= 1
                if self.left < 0:
                    raise _TooManyCandidatesError
                if luhn_valid(candidate):
                    return True
        return False

    def check(self, text: str, where: str) -> None:
        """Refuse `text`, found at `where`, when it holds a card number or the budget runs
        out on it."""
        try:
            found = self.holds(text)
        except _TooManyCandidatesError:
            raise _refuse(
                where, "holds more digit groups than are checked for a card number"
            ) from None
        if found:
            raise _refuse(where)


def _candidates(run: str) -> Iterator[str]:
    """The run's digits whole, and every stretch of its separated groups that is long enough."""
    groups = _SEPARATOR.split(run)
    for first in range(len(groups)):
        joined = ""
        for index in range(first, len(groups)):  # a slice here would copy the rest each time
            joined += groups[index]
            if len(joined) > _LONGEST:
                break
            if len(joined) >= _SHORTEST:
                yield joined


def _folded(text: str) -> str:
    """`text` as a card reader would read it: compatibility forms folded (full-width digits,
    no-break spaces), invisible format characters dropped, every decimal digit in ASCII."""
    if text.isascii():  # nothing to fold: skip the walk over every character
        return text
    return "".join(
        str(unicodedata.decimal(c)) if c.isdecimal() else c
        for c in unicodedata.normalize("NFKC", text)
        if unicodedata.category(c) != "Cf"
    )


def holds_card_number(text: str) -> bool:
    """Whether `text` holds what looks like a card number (see the module docstring), however
    many candidates that takes."""
    return _Scan(math.inf).holds(text)


def _refuse(where: str, what: str = "holds what looks like a card number") -> Problem:
    return Problem(
        400,
        ProblemType.CARD_NUMBER_REFUSED,
        f"{where} {what}; card details are entered only in the "
        "payment provider's own page, never sent here",
        field=where,
    )


def _shown(name: str) -> str:
    return name if len(name) <= _SHOWN_NAME else name[:_SHOWN_NAME] + "…"


def check_json_document(document: Any) -> None:
    """Refuse a parsed JSON body that holds a card number, naming the field (`a.b[0].c`)."""
    scan = _Scan()
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:  # without recursion: the decoder allows deeper nesting than the stack
        path, node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                scan.check(key, f"a key in {path or 'the body'}")
                pending.append((f"{path}.{_shown(key)}" if path else _shown(key), value))
        elif isinstance(node, list):
            pending.extend((f"{path}[{index}]", value) for index, value in enumerate(node))
        else:
            scalar = _scalar_text(node)
            if scalar is not None:
                scan.check(scalar, path or "the body")


def _scalar_text(node: Any) -> str | None:
    """A JSON string or number as the digits it was written with (`4242….0` is a whole
    number too); None for anything else."""
    if isinstance(node, bool):
        return None
    if isinstance(node, str | int):
        return str(node)
    if isinstance(node, float) and node.is_integer():
        return str(int(node))
    return None


def _check_pairs(pairs: list[tuple[str, str]], kind: str) -> None:
    scan = _Scan()
    for name, value in pairs:
        scan.check(name, f"a {kind} name")
        scan.check(value, f"{kind} {_shown(name)!r}")


def check_form_fields(text: str) -> None:
    """Refuse a URL-encoded form body that holds a card number, naming the field."""
    _check_pairs(parse_qsl(text, keep_blank_values=True), "form field")


def check_path(path: str) -> None:
    """Refuse a (decoded) URL path with a segment that holds a card number: an id in a path
    is logged and stored like any other, so a card number must not pass as one."""
    scan = _Scan()
    for segment in path.split("/"):
        if segment:
            scan.check(segment, "a path segment")


def check_query(pairs: list[tuple[str, str]]) -> None:
    """Refuse a query (its parameters, decoded: `ramparts.web.rules.query_pairs`) that holds a
    card number, naming the parameter."""
    _check_pairs(pairs, "query parameter")
