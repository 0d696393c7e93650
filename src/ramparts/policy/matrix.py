"""The decision matrix: every combination of role, action, relation, sensitivity, second
factor and channel (with `ai_tool+held`: a model's call the AI gateway asks to hold as an
approval request, Cedar's `context.held`), decided by a policy set, for review (`ramparts
policy diff`) and for the committed snapshots that CI compares the policies against.

There is one matrix per snapshot (`Scope`): the runtime's (`policy/decisions.json`: the
admin and no role x the runtime's actions, decided by the runtime's policies alone), and one
per app (`<its folder>/decisions.json`: its roles, admin and no role x its actions and the
runtime actions it may grant, decided by the runtime's policies with that app's alone, so
installing another app never changes it).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ramparts.policy.compose import PolicyFragment
from ramparts.policy.engine import (
    POLICY_DIR,
    SENSITIVITIES,
    Channel,
    PolicyAction,
    PolicyEngine,
    RuntimeAction,
    Subject,
    Target,
)

__all__ = [
    "CHANNELS",
    "ME",
    "SNAPSHOT",
    "SOMEONE",
    "Cell",
    "Change",
    "Scope",
    "app_scope",
    "cells",
    "changes",
    "decide_all",
    "read_snapshot",
    "runtime_scope",
    "snapshot_text",
]

SNAPSHOT = POLICY_DIR / "decisions.json"
RUNTIME_ROLES = ("admin", "none")
RELATIONS = ("same", "other")  # the resource's tenant (or a model endpoint's region) vs ours
# Who a resource's party is, in an app's relations (`AppPolicy.parties`): the caller, or
# someone else of the tenant; `None` there is no such party.
ME, SOMEONE = "matrix-principal", "matrix-someone-else"
AMRS = {"otp": frozenset({"pwd", "otp"}), "webauthn": frozenset({"pwd", "hwk"})}
#: The matrix's channels: each Cedar channel, and a model's call held for approval.
CHANNELS: tuple[tuple[str, Channel, bool], ...] = (
    *((channel.value, channel, False) for channel in Channel),
    (f"{Channel.AI_TOOL.value}+held", Channel.AI_TOOL, True),
)
HOME, ELSEWHERE = ("tenant-a", "eu"), ("tenant-b", "us")


@dataclass(frozen=True)
class Scope:
    """What one snapshot covers: `roles` x `actions`, with each resource type's relations
    (`parties`, by qualified entity type; a type without is `same` vs `other` tenant)."""

    name: str
    roles: tuple[str, ...]
    actions: tuple[PolicyAction, ...]
    snapshot: Path
    parties: Mapping[str, Mapping[str, Mapping[str, str | None]]] = field(default_factory=dict)


def runtime_scope() -> Scope:
    return Scope("runtime", RUNTIME_ROLES, RuntimeAction.ALL, SNAPSHOT)


def app_scope(fragment: PolicyFragment) -> Scope:
    if fragment.snapshot is None:
        raise ValueError(f"app {fragment.name} has no snapshot path")
    roles = (*fragment.roles, *(r for r in RUNTIME_ROLES if r not in fragment.roles))
    return Scope(
        fragment.name,
        roles,
        (*fragment.actions, *RuntimeAction.GRANTABLE),
        fragment.snapshot,
        {f"{fragment.namespace}::{kind}": rel for kind, rel in fragment.parties.items()},
    )


@dataclass(frozen=True, order=True)
class Cell:
    role: str
    action: str  # qualified: `<Namespace>::<action>`, or `audit.read` for the runtime's
    relation: str
    sensitivity: str
    amr: str
    channel: str  # a `Channel`'s value, or `ai_tool+held`

    @property
    def key(self) -> str:
        return "|".join(
            (self.role, self.action, self.relation, self.sensitivity, self.amr, self.channel)
        )


@dataclass(frozen=True)
class Change:
    cell: Cell
    old: bool
    new: bool


Request = tuple[Subject, PolicyAction, Target, Channel, bool]


def _requests(scope: Scope) -> Iterator[tuple[Cell, Request]]:
    """Each cell with what it asks `PolicyEngine.decide` (the last item: held)."""
    tenant, region = HOME
    for role, action in itertools.product(scope.roles, scope.actions):
        relations = scope.parties.get(action.entity_type) or {r: {} for r in RELATIONS}
        for relation, sensitivity, amr, (name, channel, held) in itertools.product(
            relations, SENSITIVITIES, AMRS, CHANNELS
        ):
            cell = Cell(role, action.qualified, relation, sensitivity, amr, name)
            other_tenant, other_region = ELSEWHERE if relation == "other" else HOME
            subject = Subject(
                id=ME,
                tenant=tenant,
                region=region,
                roles=frozenset() if role == "none" else frozenset({role}),
                amr=AMRS[amr],
                service=channel == Channel.SERVICE,
            )
            parties = tuple(
                (name, user) for name, user in relations[relation].items() if user is not None
            )
            target = Target(
                type=action.entity_type,
                id="matrix-resource",
                tenant=other_tenant,
                sensitivity=sensitivity,
                region=other_region,
                parties=parties,
            )
            yield cell, (subject, action, target, channel, held)


def cells(scope: Scope) -> Iterator[Cell]:
    for cell, _ in _requests(scope):
        yield cell


def decide_all(engine: PolicyEngine, scope: Scope) -> dict[str, bool]:
    """Every cell's decision, by cell key."""
    return {cell.key: engine.decide(*request).allowed for cell, request in _requests(scope)}


def changes(old: dict[str, bool], new: dict[str, bool], scope: Scope) -> list[Change]:
    found = []
    for cell in cells(scope):
        before, after = old.get(cell.key, False), new.get(cell.key, False)
        if before != after:
            found.append(Change(cell, before, after))
    return found


def read_snapshot(scope: Scope) -> dict[str, bool]:
    """The reviewed decisions: the snapshot lists the allowed cells; every other is denied
    (and a scope's snapshot that does not exist yet allows nothing)."""
    path = scope.snapshot
    allowed = set(json.loads(path.read_text())["allowed"]) if path.is_file() else set()
    return {cell.key: cell.key in allowed for cell in cells(scope)}


def snapshot_text(decisions: dict[str, bool]) -> str:
    allowed = sorted(key for key, ok in decisions.items() if ok)
    return json.dumps({"allowed": allowed}, indent=1) + "\n"
