"""What the assistant checks share: one user message answered by a compromised model whose
turns the check writes, who plays which part, and how an answer is told in evidence."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx

from ramparts.identity.models import ADMIN_ROLE
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.declared import Person
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.script import ScriptControl, Seen
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = [
    "Answer",
    "admin_of",
    "answered",
    "ask",
    "calling",
    "one_per_role_set",
    "person",
    "problem_slug",
    "roles_of",
    "unproven",
]

_PROBLEM_PREFIX = "urn:ramparts:problem:"


def unproven(expected: str, observed: str, evidence: list[str] | None = None) -> Outcome:
    """A control this check could not prove in full, though nothing it saw failed: never a
    pass (NOT-IMPLEMENTED, with what is missing in `observed`)."""
    return Outcome(Verdict.NOT_IMPLEMENTED, expected, observed, evidence or [])


@dataclass
class Answer:
    """The assistant's answer to one message, and the model calls the message led to."""

    response: httpx.Response
    seen: list[Seen]

    @property
    def status(self) -> int:
        return self.response.status_code

    def body(self) -> dict[str, Any]:
        try:
            body = self.response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def actions(self) -> list[dict[str, Any]]:
        actions = self.body().get("actions")
        return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []

    def shown(self) -> frozenset[str] | None:
        """The tools the model was offered on its first call (None: it was never called)."""
        return frozenset(self.seen[0].tools) if self.seen else None


def _script(target: Target) -> ScriptControl:
    if target.script is None:
        raise DrillError("the instance runs no scripted model this drill may play")
    return target.script


def ask(
    target: Target,
    session: ApiSession,
    message: str,
    turns: list[dict[str, Any]],
    conversation_id: str | None = None,
) -> Answer:
    """`session`'s `message` to the assistant, the model replaying `turns`."""
    script = _script(target)
    script.play(turns)
    response = session.assistant(message, conversation_id)
    return Answer(response, script.seen())


def calling(*calls: tuple[str, Any]) -> list[dict[str, Any]]:
    """A model's turns that call each (tool, arguments) at once, then answer."""
    return [
        {"tool_calls": [{"name": name, "arguments": arguments} for name, arguments in calls]},
        {"text": "done"},
    ]


def problem_slug(response: httpx.Response) -> str:
    """The problem type of a problem+json answer (`rate-limited`), else ''."""
    try:
        body = response.json()
    except ValueError:
        return ""
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return str(kind).removeprefix(_PROBLEM_PREFIX)


def answered(what: str, response: httpx.Response) -> str:
    """`what → 429 rate-limited`: an evidence line for one answer."""
    return f"{what} → {response.status_code} {problem_slug(response)}".rstrip()


def roles_of(who: Person) -> str:
    """`who`'s roles as evidence names them: `approver+employee`."""
    return "+".join(sorted(who.roles)) or "no role"


def person(target: Target, session: ApiSession) -> Person:
    """Who `session` is for Cedar: its access token's claims (read, not verified: it is the
    drill's own token) and its tenant's region from the demo credentials."""
    payload = session.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return Person(
        subject=str(claims["sub"]),
        tenant=str(claims["tenant"]),
        region=str(target.tenant(session.tenant).get("region", "")),
        roles=frozenset(claims.get("roles", ())),
        amr=frozenset(claims.get("amr", ())),
    )


def one_per_role_set(target: Target, tenant: str) -> list[str]:
    """The first demo user of `tenant` holding each distinct set of roles, in seed order."""
    chosen: dict[frozenset[str], str] = {}
    for user in target.report.get("users", []):
        if user.get("tenant") == tenant:
            chosen.setdefault(frozenset(user.get("roles", ())), str(user["username"]))
    return list(chosen.values())


def admin_of(target: Target, tenant: str) -> ApiSession:
    """The tenant's first admin, signed in: who reads its audit trail and sets its switches."""
    admins = target.users_with(ADMIN_ROLE, tenant)
    if not admins:
        raise DrillError(f"the demo credentials have no admin of {tenant}")
    return target.session(admins[0])
