"""Evidence from the instance's audit trail, read through its API as an auditor would (an
admin's `GET /api/audit/events`): the events a drill's step caused, by their ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ramparts.tabletop.target import ApiSession, DrillError

__all__ = ["audit_events", "cited", "now"]


def now() -> str:
    """The current moment as the audit API's `since` wants it (ISO 8601 with offset)."""
    return datetime.now(UTC).isoformat()


def audit_events(
    auditor: ApiSession,
    *,
    since: str,
    action: str | None = None,
    decision: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """The tenant's events since `since` (filtered by action tag or prefix like `ai:*`, and
    decision), oldest first, every page of them."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    if action is not None:
        params["action"] = action
    if decision is not None:
        params["decision"] = decision
    events: list[dict[str, Any]] = []
    while True:
        answer = auditor.get("/api/audit/events", params=params)
        if answer.status_code != 200:
            raise DrillError(f"the audit trail answered {answer.status_code} to {auditor.username}")
        page = answer.json()
        events += page["items"]
        if page.get("next_after") is None:
            return events
        params["after"] = page["next_after"]


def cited(events: list[dict[str, Any]]) -> list[str]:
    """Evidence lines naming each event: `audit #<seq> <action> <decision> <hash>`. An event
    is known by its place in its tenant's hash chain (`seq`) and its hash (the first 16 hex
    digits: enough to find it, and to see it was not rewritten, in `ramparts audit verify`)."""
    return [
        f"audit #{e.get('seq')} {e.get('action')} {e.get('decision', '')} "
        f"{str(e.get('hash', ''))[:16]}".rstrip()
        for e in events
    ]
