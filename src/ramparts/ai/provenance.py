"""Provenance: where each piece of a conversation came from, and what it may back.

Trusted: the signed-in user's own words and the result fields a tool declares trusted (system
data the user may read: ids, statuses, amounts the database computes). Untrusted: everything
else, such as third-party text (a vendor's proposal, a customer's description, a transfer's
sender) and any result field no declaration names. The model sees both and may be steered by
either; the gateway decides from this record, never from the model:

- a sensitive argument must be backed by trusted data (its real value, placeholders turned
  back into what they stand for, appears in something trusted);
- once untrusted content has entered, no `high` call runs directly.

Backing works on real values, not on what the model saw: the user's words are recorded
unmasked, so an argument holding `[IBAN_1]` is backed when the user typed that IBAN, and not
when it came from a tool's untrusted field. The record outlives the request (see `state`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Origin", "Provenance", "Segment", "Trust", "trust_of"]

_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)
#: Where a value came from, as an approver is shown it.
USER = "user message"
TRUSTED_FIELD = "trusted field"
UNTRUSTED_FIELD = "untrusted field"
UNKNOWN = "nowhere in this conversation"
TYPED_BY_REQUESTER = "typed by the requester"  # a direct request's argument (no conversation)


class Trust(StrEnum):
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class Segment:
    trust: Trust
    source: str  # "user", "tool:get_quote", "tool:get_quote:content", ...
    text: str


@dataclass(frozen=True)
class Origin:
    """Where a value was seen first: the user's message, or a tool result's field (the
    tool and the JSON Pointer of the field), trusted or not."""

    source: str  # USER, TRUSTED_FIELD, UNTRUSTED_FIELD or UNKNOWN
    tool: str | None = None
    pointer: str | None = None

    def as_json(self) -> dict[str, str]:
        shown = {"source": self.source}
        if self.tool is not None:
            shown["tool"] = self.tool
        if self.pointer is not None:
            shown["pointer"] = self.pointer
        return shown

    @classmethod
    def from_json(cls, stored: dict[str, str]) -> Origin:
        return cls(stored["source"], stored.get("tool"), stored.get("pointer"))


#: Origins that vouch for a value: the user's own words, a field the app declares system data,
#: or an argument the requester typed into a direct request (see `approval_requests`).
_VOUCHING = frozenset({USER, TRUSTED_FIELD, TYPED_BY_REQUESTER})


def trust_of(origins: list[dict[str, str]]) -> Trust:
    """An argument's trust, from where its values came from (`Provenance.origins`): trusted
    only when every origin vouches for it; a value seen in untrusted content, or nowhere (the
    model wrote it), is untrusted."""
    vouched = bool(origins) and all(o.get("source") in _VOUCHING for o in origins)
    return Trust.TRUSTED if vouched else Trust.UNTRUSTED


def _normal(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return " ".join(text.split()).casefold()


#: What a boolean or a null inside an argument stands for: nothing can back it, so a sensitive
#: argument holding one is never backed (a flag or a map's shape is the model's choice).
_UNBACKABLE = "\x00unbackable"


def _scalars(value: Any) -> list[str]:
    """The scalar values inside a JSON value, normalised: an object's keys too (a payment map
    keyed by IBAN names its recipients there)."""
    if isinstance(value, dict):
        return [v for key, item in value.items() for v in (_normal(str(key)), *_scalars(item))]
    if isinstance(value, list):
        return [v for item in value for v in _scalars(item)]
    if value is None or isinstance(value, bool):
        return [_UNBACKABLE]
    return [_normal(value)]


def _keys(value: Any) -> list[str]:
    """What the record keeps of each scalar in `value`: a digest of its normal form, so a
    long third-party text costs little to keep (the record is sealed all the same: short
    values such as amounts are easy to guess from a digest)."""
    return [hashlib.blake2b(s.encode(), digest_size=16).hexdigest() for s in _scalars(value)]


@dataclass
class Provenance:
    segments: list[Segment] = field(default_factory=list)
    #: value (its `_keys`) -> where it was first seen in something trusted
    _backing: dict[str, Origin] = field(default_factory=dict, repr=False)
    #: value -> the untrusted field it was first seen in
    _untrusted: dict[str, Origin] = field(default_factory=dict, repr=False)
    #: unbacked argument values a tool was given: a result echoing them backs nothing
    _echoed: set[str] = field(default_factory=set, repr=False)

    def add(self, trust: Trust, source: str, content: Any) -> None:
        """Record a piece of the conversation as shown to the model (masked): it is in the
        trail an approver sees, and untrusted content taints. It backs nothing by itself."""
        text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        self.segments.append(Segment(trust, source, text))

    def vouch_user(self, text: str, values: Iterable[str]) -> None:
        """The user's own words, unmasked, back what they hold: the whole text, each word
        ("refund 120.00 on order 7f3…" backs 120.00 and the id), and `values`, the personal
        data the masking replaced by placeholders (an IBAN written with spaces, a name)."""
        origin = Origin(USER)
        for key in _keys([text, *_WORD.findall(text), *values]):
            self._backing.setdefault(key, origin)

    def record_result(
        self, tool: str, trusted: list[tuple[str, Any]], untrusted: list[tuple[str, Any]]
    ) -> None:
        """A tool's result, unmasked, split into its declared trusted fields and the rest
        (each a pointer and a scalar). A trusted field that only echoes an argument nothing
        trusted backed does not make it trusted."""
        for pointer, value in trusted:
            for key in _keys(value):
                if key in self._echoed:
                    self._untrusted.setdefault(key, Origin(UNTRUSTED_FIELD, tool, pointer))
                else:
                    self._backing.setdefault(key, Origin(TRUSTED_FIELD, tool, pointer))
        for pointer, value in untrusted:
            for key in _keys(value):
                self._untrusted.setdefault(key, Origin(UNTRUSTED_FIELD, tool, pointer))

    def note_given(self, arguments: dict[str, Any]) -> None:
        """A tool ran on `arguments` (unmasked): the values in them nothing trusted backed
        stay unbacked when its result echoes them."""
        self._echoed |= {
            key for value in arguments.values() for key in _keys(value) if key not in self._backing
        }

    @property
    def tainted(self) -> bool:
        """Whether untrusted content has entered the conversation."""
        return any(s.trust is Trust.UNTRUSTED for s in self.segments)

    def backs(self, value: Any) -> bool:
        """Whether every scalar in `value` (unmasked) appears in trusted data and never in
        untrusted data: a value an untrusted field or an unbacked argument ever held backs
        nothing, whatever trusted field shows it later (a total computed from a vendor's
        prices, an id the model made up and a tool echoed)."""
        found = _keys(value)
        return bool(found) and all(
            key in self._backing and key not in self._untrusted and key not in self._echoed
            for key in found
        )

    def unbacked(self, arguments: dict[str, Any], sensitive: frozenset[str]) -> list[str]:
        return sorted(
            name for name in sensitive if name in arguments and not self.backs(arguments[name])
        )

    def origins(
        self, arguments: dict[str, Any], sensitive: frozenset[str]
    ) -> dict[str, list[dict[str, str]]]:
        """Where each of the `sensitive` arguments' values came from (never the values): what
        an approver needs to tell a bill's IBAN from the one the user typed."""
        shown: dict[str, list[dict[str, str]]] = {}
        for name in sorted(sensitive & set(arguments)):
            seen: list[dict[str, str]] = []
            for key in _keys(arguments[name]):
                # Every origin, untrusted first: an approver must see a vendor's IBAN as the
                # vendor's even when a trusted field or the user showed it too.
                found = [o for o in (self._untrusted.get(key), self._backing.get(key)) if o]
                for origin in found or [Origin(UNKNOWN)]:
                    if origin.as_json() not in seen:
                        seen.append(origin.as_json())
            shown[name] = seen
        return shown

    def argument_trust(self, arguments: object) -> dict[str, str]:
        """Each argument's trust (`trust_of` its origins), by name: what the user is shown
        beside a call the model asked for. Arguments that are not an object: none."""
        if not isinstance(arguments, dict):
            return {}
        found = self.origins(arguments, frozenset(arguments))
        return {name: trust_of(origins).value for name, origins in found.items()}

    def trail(self) -> list[dict[str, str]]:
        """What an approver is shown: each segment's source and trust, not its full text."""
        return [
            {"trust": s.trust.value, "source": s.source, "excerpt": s.text[:200]}
            for s in self.segments
        ]

    def state(self) -> dict[str, Any]:
        """What backs and what does not, to keep with the conversation (sealed at rest). The
        segments are kept as the conversation's messages."""
        return {
            "backing": {key: o.as_json() for key, o in self._backing.items()},
            "untrusted": {key: o.as_json() for key, o in self._untrusted.items()},
            "echoed": sorted(self._echoed),
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Provenance:
        return cls(
            _backing={k: Origin.from_json(o) for k, o in state.get("backing", {}).items()},
            _untrusted={k: Origin.from_json(o) for k, o in state.get("untrusted", {}).items()},
            _echoed=set(state.get("echoed", ())),
        )
