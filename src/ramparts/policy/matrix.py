"""The decision matrix: every combination of role, action, relation, sensitivity, second
factor and channel, decided by a policy set, for review (`ramparts policy diff`) and for the
committed snapshot (`decisions.json`) that CI compares the policies against."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ramparts.policy.engine import (
    POLICY_DIR,
    SENSITIVITIES,
    Channel,
    PolicyAction,
    PolicyEngine,
    Subject,
    Target,
)

__all__ = [
    "SNAPSHOT",
    "Cell",
    "Change",
    "cells",
    "changes",
    "decide_all",
    "read_snapshot",
    "snapshot_text",
]

SNAPSHOT = POLICY_DIR / "decisions.json"
ROLES = ("buyer", "seller", "finance", "admin", "none")
RELATIONS = ("same", "other")  # the resource's tenant (or a model endpoint's region) vs ours
# A quote of our tenant is also ours or not: `same` is someone else's (another buyer asked,
# another seller answers), `requested` we asked for, `assigned` we answer, `open` awaits any
# seller. Each names the quote's (buyer, seller); `None` is no seller.
ME, SOMEONE = "matrix-principal", "matrix-someone-else"
QUOTE_PARTIES: dict[str, tuple[str, str | None]] = {
    "same": (SOMEONE, SOMEONE),
    "requested": (ME, SOMEONE),
    "assigned": (SOMEONE, ME),
    "open": (SOMEONE, None),
    "other": (SOMEONE, SOMEONE),
}
AMRS = {"otp": frozenset({"pwd", "otp"}), "webauthn": frozenset({"pwd", "hwk"})}
HOME, ELSEWHERE = ("tenant-a", "eu"), ("tenant-b", "us")


@dataclass(frozen=True, order=True)
class Cell:
    role: str
    action: str
    relation: str
    sensitivity: str
    amr: str
    channel: str

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


def cells() -> Iterator[Cell]:
    for role, action in itertools.product(ROLES, PolicyAction):
        relations = QUOTE_PARTIES if action.resource_type == "Quote" else RELATIONS
        for relation, sensitivity, amr, channel in itertools.product(
            relations, SENSITIVITIES, AMRS, Channel
        ):
            yield Cell(role, action.value, relation, sensitivity, amr, channel.value)


def _request(cell: Cell) -> tuple[Subject, PolicyAction, Target, Channel]:
    action = PolicyAction(cell.action)
    tenant, region = HOME
    other_tenant, other_region = ELSEWHERE if cell.relation == "other" else HOME
    subject = Subject(
        id=ME,
        tenant=tenant,
        region=region,
        roles=frozenset() if cell.role == "none" else frozenset({cell.role}),
        amr=AMRS[cell.amr],
        service=cell.channel == Channel.SERVICE,
    )
    quote = action.resource_type == "Quote"
    buyer, seller = QUOTE_PARTIES[cell.relation] if quote else (None, None)
    target = Target(
        type=action.resource_type,
        id="matrix-resource",
        tenant=other_tenant,
        sensitivity=cell.sensitivity,
        region=other_region,
        buyer=buyer,
        seller=seller,
    )
    return subject, action, target, Channel(cell.channel)


def decide_all(engine: PolicyEngine) -> dict[str, bool]:
    """Every cell's decision, by cell key."""
    return {cell.key: engine.decide(*_request(cell)).allowed for cell in cells()}


def changes(old: dict[str, bool], new: dict[str, bool]) -> list[Change]:
    found = []
    for cell in cells():
        before, after = old.get(cell.key, False), new.get(cell.key, False)
        if before != after:
            found.append(Change(cell, before, after))
    return found


def read_snapshot(path: Path = SNAPSHOT) -> dict[str, bool]:
    """The reviewed decisions: the snapshot lists the allowed cells; every other is denied."""
    allowed = set(json.loads(path.read_text())["allowed"])
    return {cell.key: cell.key in allowed for cell in cells()}


def snapshot_text(decisions: dict[str, bool]) -> str:
    allowed = sorted(key for key, ok in decisions.items() if ok)
    return json.dumps({"allowed": allowed}, indent=1) + "\n"
