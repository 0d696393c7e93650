"""What the API lets a signed-in person read, found from the instance's own OpenAPI document
rather than from any app's routes: its GET routes under `/api` without path parameters (the
lists), and for each list the route that reads one of its items (`/api/x` and `/api/x/{id}`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["Listing", "id_values", "item_route", "list_routes", "readable_route", "strings_in"]

_PARAMETER = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Listing:
    """A list route and the route that reads one of its items (None when it has none)."""

    path: str
    item: str | None


def list_routes(target: Target) -> list[Listing]:
    """The instance's GET list routes under /api, by path."""
    with target.client() as http:
        answer = http.get("/openapi.json")
    if answer.status_code != 200:
        raise DrillError(f"GET /openapi.json answered {answer.status_code}")
    paths: dict[str, Any] = answer.json().get("paths", {})
    readable = {path for path, methods in paths.items() if "get" in methods}
    found = []
    for path in sorted(readable):
        if not path.startswith("/api/") or _PARAMETER.search(path):
            continue
        items = [p for p in readable if re.fullmatch(re.escape(path) + r"/\{[^}/]+\}", p)]
        found.append(Listing(path, items[0] if items else None))
    return found


def item_route(listing: Listing, item_id: str) -> str:
    if listing.item is None:
        raise ValueError(f"{listing.path} has no item route")
    return _PARAMETER.sub(item_id, listing.item)


def readable_route(session: ApiSession, listings: list[Listing]) -> str:
    """The first list route `session` may read (200): where a token's acceptance shows."""
    for listing in listings:
        if session.get(listing.path).status_code == 200:
            return listing.path
    raise DrillError(f"{session.username} may read none of the API's lists")


def _items(body: Any) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return list(body["items"])
    return list(body) if isinstance(body, list) else []


def id_values(body: Any) -> list[str]:
    """The `id` of each item of a list answer (a JSON list or `{"items": [...]}`)."""
    return [str(item["id"]) for item in _items(body) if isinstance(item, dict) and "id" in item]


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from strings_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings_in(inner)
