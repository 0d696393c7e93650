"""The assistant's audit events each attempt caused, read through the audit API by each
tenant's admin: the injection scanner's findings (the detector hit rate), the refusals and
approval requests (the evidence), the strikes against the person, and locks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from ramparts.tabletop.evidence import cited, now
from ramparts.tabletop.redteam.people import People
from ramparts.tabletop.target import DrillError, Target

__all__ = ["INJECTION", "LOCKED", "Trail", "cited_events", "earlier_strikes", "strikes"]

INJECTION = "ai:injection:suspected"
LOCKED = "ai:access:locked"
TOOL_CALLED = "ai:tool:called"
CONTENT_REFUSED = "ai:content:refused"
APPROVAL_REQUESTED = "ai:approval:requested"
PAGE = 500


class Trail:
    """A cursor on each tenant's chain: `since(tenant)` answers the `ai:*` events recorded
    after the previous call (the attempts run one at a time, so they are the attempt's)."""

    def __init__(self, target: Target, people: People) -> None:
        self._people = people
        self._started = now()
        self._after: dict[str, int] = {}
        self._auditor: dict[str, str] = {}
        for tenant in target.tenants():
            admins = target.users_with("admin", tenant)
            if not admins:
                raise DrillError(f"tenant {tenant} has no admin to read its audit trail")
            self._auditor[tenant] = admins[0]
            self._after[tenant] = 0

    def since(self, tenant: str, *, started: str | None = None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while True:
            params = {
                "action": "ai:*",
                "since": started or self._started,
                "after": self._after[tenant],
                "limit": PAGE,
            }
            answer = self._people.request(
                self._auditor[tenant], "GET", "/api/audit/events", params=params
            )
            if answer.status_code != 200:
                raise DrillError(f"the audit trail of {tenant} answered {answer.status_code}")
            page = answer.json()["items"]
            events += page
            if page:
                self._after[tenant] = int(page[-1]["seq"])
            if len(page) < PAGE:
                return events


def strikes(events: Iterable[dict[str, Any]]) -> int:
    """What the abuse limiter counted against the person: refused calls, injection signs in
    their own words, refused content."""
    return sum(
        (e.get("action") == TOOL_CALLED and e.get("decision") == "deny")
        or (e.get("action") == INJECTION and (e.get("details") or {}).get("source") == "user")
        or e.get("action") == CONTENT_REFUSED
        for e in events
    )


def cited_events(events: Iterable[dict[str, Any]], tenant: str, *, most: int = 3) -> list[str]:
    """Evidence lines for the events that show the defenses at work: refusals, injection
    findings, approval requests, locks."""
    telling = [
        e
        for e in events
        if e.get("decision") == "deny" or e.get("action") in {APPROVAL_REQUESTED, LOCKED}
    ]
    return [f"{tenant}: {line}" for line in cited(telling[:most])]


def earlier_strikes(target: Target, trail: Trail, seconds: float) -> Counter[str]:
    """The strikes each person (by user id) earned in the last `seconds`, before the run:
    what the abuse limiter holds against them now."""
    began = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()
    found: Counter[str] = Counter()
    for tenant in target.tenants():
        for event in trail.since(tenant, started=began):
            actor = str((event.get("actor") or {}).get("id"))
            found[actor] += strikes([event])
    return found
