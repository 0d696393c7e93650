"""JSON Pointers (RFC 6901) naming the fields of a tool's result, with one wildcard.

A pointer such as `/id` or `/sender/name` names one value; the reference token `*` stands for
every item of an array (`/items/*/price`: the price of each item). `*` never matches an object
member: a result field literally named "*" cannot be declared. `~1` and `~0` escape `/` and
`~` as in RFC 6901 section 4. A pointer names a scalar: the strings, numbers, booleans and
nulls reached through containers at the pointed place are never covered by a pointer that
names the container itself (a declaration is exact, so it cannot trust more than it says).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANY_ITEM",
    "Place",
    "PointerError",
    "check_against_schema",
    "keys",
    "matches",
    "parse",
    "places",
    "property_names",
]

ANY_ITEM = "*"


class PointerError(ValueError):
    """A pointer that is not a JSON Pointer, or names no field of a schema."""


def parse(pointer: str) -> tuple[str, ...]:
    """The reference tokens of `pointer` (RFC 6901 section 3), unescaped."""
    if not pointer.startswith("/"):
        raise PointerError(f"{pointer!r} is not a JSON Pointer: it starts with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise PointerError(f"{pointer!r}: '~' is escaped as '~0'")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def _escaped(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Place:
    """Where a scalar or a key sits inside a JSON value: its reference tokens, and which of
    them are array indices (an object member may be called "0" or "*": never an item)."""

    tokens: tuple[str, ...]
    items: frozenset[int] = frozenset()

    @property
    def pointer(self) -> str:
        return "".join(f"/{_escaped(token)}" for token in self.tokens)

    def member(self, key: str) -> Place:
        return Place((*self.tokens, key), self.items)

    def item(self, index: int) -> Place:
        return Place((*self.tokens, str(index)), self.items | {len(self.tokens)})


def places(value: Any, at: Place = Place(())) -> Iterator[tuple[Place, Any]]:
    """Every scalar inside a JSON value with its place (`/items/0/price`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from places(item, at.member(str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from places(item, at.item(index))
    else:
        yield at, value


def keys(value: Any, at: Place = Place(())) -> Iterator[tuple[Place, str]]:
    """Every object key inside a JSON value, with the place of the member it names."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield at.member(str(key)), str(key)
            yield from keys(item, at.member(str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from keys(item, at.item(index))


def property_names(schema: Any) -> frozenset[str]:
    """Every name a schema declares under `properties`, at any depth: the keys a result can
    hold that its tool wrote, not its data."""
    found: set[str] = set()
    if isinstance(schema, Mapping):
        for name, value in schema.items():
            if name == "properties" and isinstance(value, Mapping):
                found |= {str(k) for k in value}
            found |= property_names(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= property_names(item)
    return frozenset(found)


def matches(declared: tuple[str, ...], place: Place) -> bool:
    """Whether `place` is the one `declared` names: `*` stands for any array item, every
    other token for the object member of that name."""
    return len(place.tokens) == len(declared) and all(
        want == ANY_ITEM if i in place.items else want == got
        for i, (want, got) in enumerate(zip(declared, place.tokens, strict=True))
    )


def check_against_schema(pointers: Iterable[str], schema: Mapping[str, Any]) -> None:
    """Refuse a pointer that names no field the schema describes (a typo would trust
    nothing, silently): each token is a `properties` name, or `*` where there are `items`."""
    for pointer in pointers:
        place: Mapping[str, Any] = schema
        for token in parse(pointer):
            if token == ANY_ITEM and isinstance(place.get("items"), Mapping):
                place = place["items"]
            elif token in place.get("properties", {}):
                place = place["properties"][token]
            else:
                raise PointerError(f"{pointer} names no field of the result schema")
