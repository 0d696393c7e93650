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
from typing import Any

__all__ = [
    "ANY_ITEM",
    "PointerError",
    "check_against_schema",
    "keys",
    "leaves",
    "matches",
    "parse",
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


def leaves(value: Any, at: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar inside a JSON value with the pointer of its place (`/items/0/price`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{at}/{_escaped(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{at}/{index}")
    else:
        yield at, value


def keys(value: Any, at: str = "") -> Iterator[tuple[str, str]]:
    """Every object key inside a JSON value, with the pointer of the member it names."""
    if isinstance(value, dict):
        for key, item in value.items():
            place = f"{at}/{_escaped(str(key))}"
            yield place, str(key)
            yield from keys(item, place)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from keys(item, f"{at}/{index}")


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


def matches(declared: tuple[str, ...], pointer: str) -> bool:
    """Whether the concrete `pointer` (from `leaves`) is the place `declared` names."""
    tokens = parse(pointer)
    return len(tokens) == len(declared) and all(
        want == got or (want == ANY_ITEM and got.isdigit())
        for want, got in zip(declared, tokens, strict=True)
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
