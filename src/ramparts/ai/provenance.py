"""Provenance: where each piece of a conversation came from, and what it may back.

Trusted: the signed-in user's own words and system data the user may read (ids, statuses,
amounts the database holds). Untrusted: third-party text (a vendor's proposal, a buyer's
description, a document, a webhook payload) and anything a tool returns from it. The model sees
both and may be steered by either; the gateway decides from this record, never from the model:

- a sensitive argument must be backed by trusted data (its value appears in something trusted);
- once untrusted content has entered, no `high` call runs directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Provenance", "Segment", "Trust", "scalars"]

_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)


class Trust(StrEnum):
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class Segment:
    trust: Trust
    source: str  # "user", "tool:get_quote", "tool:get_quote:description", ...
    text: str


def _normal(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return " ".join(text.split()).casefold()


def scalars(value: Any) -> list[str]:
    """The scalar values inside a JSON value, normalised."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in scalars(item)]
    if isinstance(value, list):
        return [v for item in value for v in scalars(item)]
    if value is None or isinstance(value, bool):
        return []
    return [_normal(value)]


@dataclass
class Provenance:
    segments: list[Segment] = field(default_factory=list)
    _trusted_values: set[str] = field(default_factory=set, repr=False)

    def add(
        self, trust: Trust, source: str, content: Any, *, withhold: frozenset[str] = frozenset()
    ) -> None:
        """Record a piece of the conversation. Trusted text (the user's words) backs its
        words; trusted data (a tool's result) backs its values, except `withhold`: values
        the tool only echoed from arguments nothing trusted backed."""
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        self.segments.append(Segment(trust, source, text))
        if trust is not Trust.TRUSTED:
            return
        if isinstance(content, str):
            self._trusted_values.add(_normal(content))
            self._trusted_values.update(word.casefold() for word in _WORD.findall(content))
        else:
            self._trusted_values.update(v for v in scalars(content) if v not in withhold)

    @property
    def tainted(self) -> bool:
        """Whether untrusted content has entered the conversation."""
        return any(s.trust is Trust.UNTRUSTED for s in self.segments)

    def backs(self, value: Any) -> bool:
        """Whether every scalar in `value` appears in trusted data (exactly, or as a word of
        the user's own text: "refund 120.00 on quote 7f3…" backs 120.00 and the id)."""
        found = scalars(value)
        return bool(found) and all(s in self._trusted_values for s in found)

    def unbacked(self, arguments: dict[str, Any], sensitive: frozenset[str]) -> list[str]:
        return sorted(
            name for name in sensitive if name in arguments and not self.backs(arguments[name])
        )

    def trail(self) -> list[dict[str, str]]:
        """What an approver is shown: each segment's source and trust, not its full text."""
        return [
            {"trust": s.trust.value, "source": s.source, "excerpt": s.text[:200]}
            for s in self.segments
        ]
