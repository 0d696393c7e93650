"""AZ-3's call-time part: a tool its person is shown, called on a record of their tenant that
is not theirs to act on, is refused by Cedar when it runs (the policy's refusal, a denied
decision on that very record in the audit trail), while the same call on a record of their
own runs. Which records are whose is found as a client finds it: the same listing tool, asked
by each person, shows some of them what it keeps from another. Nothing here names an app."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ramparts.ai.tools import Risk, Tool
from ramparts.audit.events import Action
from ramparts.policy.engine import Channel, Subject
from ramparts.policy.engine import Target as Resource
from ramparts.tabletop.conformance.declared import (
    SOMEONE_ELSE,
    Declared,
    Person,
    needs_a_record,
    sample_arguments,
)
from ramparts.tabletop.conformance.playing import Answer, ask, calling, roles_of
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, Target

__all__ = [
    "Shown",
    "first_result",
    "listed",
    "listing",
    "reauthorized",
    "record_argument",
]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOT_ALLOWED = "is not allowed here"


@dataclass(frozen=True)
class Shown:
    """A person signed in and the tools the model was shown for them."""

    session: ApiSession
    who: Person
    tools: frozenset[str]


def first_result(answer: Answer) -> Any:
    """The first tool result the model was shown (its second call holds it), or None."""
    if len(answer.seen) < 2:
        return None
    results = [m for m in answer.seen[1].messages if m.get("role") == "tool"]
    try:
        return json.loads(str(results[-1].get("content", "")))
    except (IndexError, ValueError):
        return None


def _record_ids(tool: Tool, result: Any) -> list[str]:
    """The ids of the records a listing returned: its trusted values at an `id` (or in an
    `ids` list) that are UUIDs."""
    if not isinstance(result, dict):
        return []
    found = []
    for pointer, value in tool.split_result(result)[0]:
        tokens = pointer.split("/")
        is_id = tokens[-1] == "id" or (len(tokens) > 1 and tokens[-2] == "ids")
        if is_id and isinstance(value, str) and _UUID.fullmatch(value) and value not in found:
            found.append(value)
    return found


def listing(declared: Declared, shown: Shown, kind: str) -> Tool | None:
    """A read tool of `kind`'s records shown to the person, callable with no argument."""
    for name in sorted(shown.tools):
        tool = declared.tool(name)
        if (
            tool is not None
            and tool.risk is Risk.READ
            and tool.action.entity_type == kind
            and sample_arguments(tool) == {}
        ):
            return tool
    return None


def record_argument(tool: Tool) -> str:
    """The first required argument naming a record (`format: uuid`)."""
    properties = tool.arguments.get("properties", {})
    return next(
        str(name)
        for name in tool.arguments.get("required", [])
        if properties.get(name, {}).get("format") == "uuid"
    )


def listed(target: Target, shown: Shown, lister: Tool, cache: dict[Any, list[str]]) -> list[str]:
    """The ids of the records `lister` shows the person (asked once per drill: `cache`)."""
    key = (shown.session.username, lister.name)
    if key not in cache:
        answer = ask(target, shown.session, "List them.", calling((lister.name, {})))
        cache[key] = _record_ids(lister, first_result(answer))
    return cache[key]


def reauthorized(
    target: Target,
    declared: Declared,
    people: list[Shown],
    auditor: ApiSession,
    evidence: list[str],
    *,
    cache: dict[Any, list[str]],
) -> tuple[list[str], bool]:
    """What is wrong, and whether the re-authorization was exercised at all. Tried: each
    person (those the policy keeps from someone else's records) and read tool they are
    shown that names a record, until one has a record of their own and one another person
    of their tenant lists that their own listing does not show (the listings asked once,
    kept in `cache`)."""
    for shown in people:
        subject = shown.who.as_subject()
        for name in sorted(shown.tools):
            tool = declared.tool(name)
            if tool is None or tool.risk is not Risk.READ or not needs_a_record(tool):
                continue
            kind = tool.action.entity_type
            if not _kept_from_others(declared, subject, tool):
                continue
            lister = listing(declared, shown, kind)
            if lister is None:
                continue
            own = listed(target, shown, lister, cache)
            theirs = [
                record
                for other in people
                if other.who.subject != shown.who.subject
                and (found := listing(declared, other, kind)) is not None
                for record in listed(target, other, found, cache)
                if record not in own
            ]
            if not own or not theirs:
                continue
            records = (own[0], theirs[0])
            return _try(target, shown, tool, records, auditor=auditor, evidence=evidence), True
    evidence.append(
        "no person was shown a read tool on a record, with a record of their own and one of "
        "someone else's listed: the re-authorization at call time was not exercised"
    )
    return [], False


def _kept_from_others(declared: Declared, subject: Subject, tool: Tool) -> bool:
    """Whether the unchanged policy refuses `subject` the tool's action on a record of
    their tenant that is someone else's (its parties all another person)."""
    kind = tool.action.entity_type
    names = declared.engine.party_attributes(kind)
    if not names:
        return False
    resource = Resource(kind, "*", subject.tenant, parties=tuple((n, SOMEONE_ELSE) for n in names))
    return not declared.engine.decide(subject, tool.action, resource, Channel.API).allowed


def _try(
    target: Target,
    shown: Shown,
    tool: Tool,
    records: tuple[str, str],
    *,
    auditor: ApiSession,
    evidence: list[str],
) -> list[str]:
    """The tool on the person's own record (the control: it runs) and on another's (refused
    by the policy at call time, the denial on that record audited), in one model turn."""
    own, theirs = records
    argument = record_argument(tool)
    base = sample_arguments(tool) or {}
    since = now()
    answer = ask(
        target,
        shown.session,
        "Show me both.",
        calling((tool.name, base | {argument: own}), (tool.name, base | {argument: theirs})),
    )
    label = f"{roles_of(shown.who)} calls {tool.name}"
    actions = answer.actions()
    if answer.status != 200 or len(actions) != 2:
        return [f"{label} on two records: the assistant answered {answer.status}"]
    mine, other = actions
    refusal = f"{tool.action} {NOT_ALLOWED}"
    evidence.append(
        f"{label} on a record of their own → {mine.get('status')}: {mine.get('reason')}"
    )
    evidence.append(
        f"{label} on {theirs}, listed to another person, not to them → "
        f"{other.get('status')}: {other.get('reason')}"
    )
    decided = audit_events(
        auditor, since=since, action=Action.AUTHORIZATION_DECIDED.value, decision="deny"
    )
    denied = [e for e in decided if _on(e, theirs)]
    wrong = []
    if mine.get("status") != "executed":
        wrong.append(f"{label} on their own record was {mine.get('status')}, not executed")
    if other.get("status") != "refused" or other.get("reason") != refusal:
        wrong.append(
            f"{label} on another person's record was {other.get('status')} "
            f"({other.get('reason')}), not refused as '{refusal}'"
        )
    if not denied:
        wrong.append(f"no denied authorization decision on {theirs} was audited")
    else:
        evidence += [f"{line} on {theirs}" for line in cited(denied[:1])]
    return wrong


def _on(event: dict[str, Any], record: str) -> bool:
    resource = event.get("resource")
    return isinstance(resource, dict) and str(resource.get("id")) == record
