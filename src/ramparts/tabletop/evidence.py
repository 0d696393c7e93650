"""Evidence from the instance's audit trail, read through its API as an auditor would (an
admin's `GET /api/audit/events`): the events a drill's step caused, by their ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from ramparts.logs import redact_secrets
from ramparts.tabletop.target import ApiSession, DrillError

__all__ = ["audit_events", "cited", "now", "redacted", "without_credentials"]

#: The user-info part of a URL (`scheme://user:password@`), wherever it appears in text.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]*@")
#: How much of a child process's output may go into a report.
OUTPUT_CHARS = 300


#: How far `now()` reaches back: the instance stamps events with its own clock (and the
#: database's), which may run a little behind ours; an event of the step must not be missed.
CLOCK_MARGIN = timedelta(seconds=2)


def now() -> str:
    """The moment a step starts, as the audit API's `since` wants it (ISO 8601 with offset),
    less the clock margin."""
    return (datetime.now(UTC) - CLOCK_MARGIN).isoformat()


def audit_events(
    auditor: ApiSession,
    *,
    since: str,
    action: str | None = None,
    decision: str | None = None,
    actor: str | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """The tenant's events since `since` (filtered by action tag or prefix like `ai:*`, and
    decision, and the actor's id), oldest first, every page of them."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    if action is not None:
        params["action"] = action
    if decision is not None:
        params["decision"] = decision
    if actor is not None:
        params["actor"] = actor
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


def without_credentials(text: str) -> str:
    """`text` with every URL's user and password taken out (`postgresql://u:p@h` → `…://h`)."""
    return _USERINFO.sub(r"\g<scheme>", text)


def redacted(output: str, *, last_line: bool = False) -> str:
    """A child process's output as a report may carry it: URL credentials, secrets and
    personal data taken out by the product's own log redaction, at most OUTPUT_CHARS long
    (its last line only, when `last_line`)."""
    text = output.strip()
    if last_line:
        text = (text.splitlines() or ["no output"])[-1]
    cleaned = redact_secrets(None, "", {"output": without_credentials(text)})["output"]
    return str(cleaned)[:OUTPUT_CHARS]
