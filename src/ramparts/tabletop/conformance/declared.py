"""What the served apps declare, read in the drill's own process instead of asked of the
instance: their tools (names, JSON Schemas, Cedar actions, risk tiers) and their Cedar
composed with the runtime's.

It is the reference the live checks hold the instance to. An instance whose code was changed
to offer a tool to more people, or to allow what its policy forbids, answers consistently
with itself (its tool list, its refusals and its audit trail all agree), so only a copy of
the policy as code that was not changed with it can tell. The copy is this installation's:
against another machine's instance it is right only when both run the same release.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from ramparts.ai.tools import Risk, Tool, ToolRegistry
from ramparts.apps import AppServices, policy_engine, selected_apps
from ramparts.config import Settings
from ramparts.policy.engine import Channel, PolicyEngine, Subject, Target
from ramparts.tabletop.target import DrillError
from ramparts.tabletop.target import Target as Instance

__all__ = ["Declared", "Person", "needs_a_record", "sample_arguments", "served_apps"]

#: A user id nobody has: a resource of "someone else" (as the gateway judges its offer).
SOMEONE_ELSE = "someone-else"
#: Values tried for a string with a `pattern`, the first that fits is taken: a currency, an
#: amount as people write it, a count, a word.
_PATTERN_CANDIDATES = ("EUR", "42.50", "1", "drill")
_RISK_ORDER = {Risk.HIGH: 0, Risk.WRITE: 1, Risk.READ: 2}


@dataclass(frozen=True)
class Person:
    """Someone signed in, as Cedar sees them: the claims of their access token and their
    tenant's data region."""

    subject: str
    tenant: str
    region: str
    roles: frozenset[str]
    amr: frozenset[str]

    def as_subject(self) -> Subject:
        return Subject(self.subject, self.tenant, self.region, self.roles, self.amr)


class _DeclarationsOnly:
    """Stands in for every runtime service an app's tool factory is handed: the drill reads
    the tools' declarations and never runs one, so any use of a service is a mistake."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise DrillError(f"the drill reads tool declarations only ({self._name}.{attribute})")

    def __call__(self, *_: Any, **__: Any) -> Any:
        raise DrillError(f"the drill reads tool declarations only ({self._name}())")


def _services() -> AppServices:
    stand_ins = {name: _DeclarationsOnly(name) for name in AppServices.__dataclass_fields__}
    # The settings' defaults, not this process's environment: a tool factory may read a
    # setting (a URL it will link to), and no value of it changes a declaration.
    stand_ins["settings"] = cast(Any, Settings.model_construct())
    return AppServices(**cast(Mapping[str, Any], stand_ins))


def served_apps(target: Instance) -> list[str] | None:
    """The apps the instance serves, as its settings or its description name them (None:
    those this installation serves by default)."""
    named = target.environment.get("RAMPARTS_APPS") or target.description.get("apps")
    return [name.strip() for name in named.split(",") if name.strip()] if named else None


class Declared:
    """The served apps' tools and the composed Cedar, as this installation declares them."""

    def __init__(self, apps: Sequence[str] | None) -> None:
        chosen = selected_apps(apps)
        self.engine: PolicyEngine = policy_engine(chosen)
        self.registry = ToolRegistry()
        services = _services()
        for app in chosen:
            app.tools(self.registry, services)

    @classmethod
    def of(cls, target: Instance) -> Declared:
        """The declarations of the apps `target` serves (read once per process: they are
        this installation's code, which does not change under a running drill)."""
        apps = served_apps(target)
        return _declared(tuple(apps) if apps is not None else None)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.registry)

    def tool(self, name: str) -> Tool | None:
        return self.registry.get(name)

    def by_risk(self) -> list[Tool]:
        """Every tool, the riskiest first."""
        return sorted(self.registry, key=lambda tool: _RISK_ORDER[tool.risk])

    def may_call(self, person: Person) -> frozenset[str]:
        """The tools Cedar lets `person` call: the action on a resource of their tenant that
        is theirs (they are every party it has) or else someone else's, asked on the `api`
        channel, as if they made the call themselves. The gateway's own question (a model is
        shown exactly these); here asked of the unchanged policy."""
        subject = person.as_subject()
        allowed = set()
        for tool in self.registry:
            kind = tool.action.entity_type
            names = self.engine.party_attributes(kind)
            for party in (subject.id, SOMEONE_ELSE)[: 2 if names else 1]:
                resource = Target(
                    kind, "*", subject.tenant, parties=tuple((n, party) for n in names)
                )
                if self.engine.decide(subject, tool.action, resource, Channel.API).allowed:
                    allowed.add(tool.name)
                    break
        return frozenset(allowed)


def needs_a_record(tool: Tool) -> bool:
    """Whether a required argument names a record (an id, `format: uuid`): a made-up one
    names none, so a call on it is refused as "no such" whatever else holds."""
    properties = tool.arguments.get("properties", {})
    return any(
        properties.get(name, {}).get("format") == "uuid"
        for name in tool.arguments.get("required", [])
    )


@cache
def _declared(apps: tuple[str, ...] | None) -> Declared:
    return Declared(apps)


def sample_arguments(tool: Tool) -> dict[str, Any] | None:
    """Arguments that satisfy `tool`'s schema (its required fields only, plain values: the
    first enum value, the least number allowed, a fresh UUID), or None when the schema asks
    for something this cannot make (a pattern none of the candidates fits)."""
    try:
        made = _sample(tool.arguments)
    except _CannotMakeError:
        return None
    if not isinstance(made, dict) or tool.argument_errors(made):
        return None
    return made


class _CannotMakeError(Exception):
    pass


def _sample(schema: Mapping[str, Any]) -> Any:  # noqa: PLR0911 - one return per JSON type
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _sample(properties.get(name, {})) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind in {"integer", "number"}:
        least = max(schema.get("minimum", 1), 1)
        if "maximum" in schema and least > schema["maximum"]:
            least = schema["minimum"]
        return least
    if kind == "boolean":
        return False
    if kind == "string":
        return _string(schema)
    raise _CannotMakeError


def _string(schema: Mapping[str, Any]) -> str:
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength", 10_000)
    pattern = schema.get("pattern")
    for candidate in _PATTERN_CANDIDATES:
        fits = pattern is None or _matches(pattern, candidate)
        if fits and shortest <= len(candidate) <= longest:
            return candidate
    raise _CannotMakeError


def _matches(pattern: str, value: str) -> bool:
    # JSON Schema patterns are ECMA 262 regular expressions; on the candidates' plain
    # characters Python's agree, and the schema check that follows has the last word.
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return False
