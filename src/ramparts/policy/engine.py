"""Cedar, loaded once: the schema, the policies, and one decision per request.

The runtime's policies live in `policies/*.cedar` beside its schema (`schema.cedarschema`);
each app brings its own in its namespace, composed with them (`ramparts.policy.compose`). The
whole is read and validated once when the engine is built, and the parsed policy set is reused
for every decision, so no request pays for parsing. Each policy carries an `@id("...")`
annotation, the name a decision reports (and the audit trail records) for the policies that
determined it.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cedarpy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ramparts.policy.compose import PolicyFragment

__all__ = [
    "POLICY_DIR",
    "SENSITIVITIES",
    "Channel",
    "PolicyAction",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyError",
    "RuntimeAction",
    "Subject",
    "Target",
]

POLICY_DIR = Path(__file__).resolve().parent
REMEMBERED_DECISIONS = 65_536
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


class PolicyError(Exception):
    """The policies do not parse, do not validate against the schema, or an app's Cedar may
    not be composed with the runtime's (see `ramparts.policy.compose`)."""


@dataclass(frozen=True)
class PolicyAction:
    """An action a route or an AI tool may ask for: the Cedar action `name` of `namespace`
    (an app's; "" is the runtime's own), on entities of `resource_type` of that namespace."""

    name: str  # the Cedar action id inside its namespace, e.g. "audit.read"
    resource_type: str  # the entity type it applies to, unqualified, e.g. "AuditLog"
    namespace: str = ""  # the app's Cedar namespace; "" = the runtime's own

    @property
    def cedar_type(self) -> str:
        """The Cedar entity type of the action itself (`<Namespace>::Action`)."""
        return f"{self.namespace}::Action" if self.namespace else "Action"

    @property
    def entity_type(self) -> str:
        """The qualified entity type of its resources: what `Target.type` says."""
        return _qualified(self.namespace, self.resource_type)

    @property
    def qualified(self) -> str:
        """The name the audit trail and the decision matrix record."""
        return _qualified(self.namespace, self.name)

    def __str__(self) -> str:
        return self.qualified


def _qualified(namespace: str, name: str) -> str:
    return f"{namespace}::{name}" if namespace else name


class RuntimeAction:
    """The runtime's own actions (the Cedar actions of `schema.cedarschema`)."""

    AUDIT_READ = PolicyAction("audit.read", "AuditLog")
    ASSISTANT_APPROVE = PolicyAction("assistant.approve", "Assistant")
    ASSISTANT_CONFIGURE = PolicyAction("assistant.configure", "Assistant")
    MODEL_CALL = PolicyAction("model.call", "ModelEndpoint")
    USERS_READ = PolicyAction("users.read", "Directory")
    ALL = (AUDIT_READ, ASSISTANT_APPROVE, ASSISTANT_CONFIGURE, MODEL_CALL, USERS_READ)
    # The only runtime actions an app's policies may permit, and only to the app's own roles:
    # its people use the assistant and decide its approval requests.
    GRANTABLE = (MODEL_CALL, ASSISTANT_APPROVE)


class Channel(StrEnum):
    UI = "ui"
    API = "api"
    AI_TOOL = "ai_tool"
    SERVICE = "service"


@dataclass(frozen=True)
class Subject:
    """Who asks: a user or a service of `tenant` (whose data lives in `region`)."""

    id: str
    tenant: str
    region: str
    roles: frozenset[str] = frozenset()
    amr: frozenset[str] = frozenset()
    service: bool = False


@dataclass(frozen=True)
class Target:
    """What is asked about: `type` is a qualified Cedar entity type
    (`PolicyAction.entity_type`).

    `parties` are the resource's attributes that are users: (attribute, user id), e.g. who
    asked for it and who answers it; a party the resource does not have is not listed. A
    target without parties is owned by nobody, so no ownership rule allows anything on it."""

    type: str
    id: str
    tenant: str | None = None
    sensitivity: str = "internal"
    region: str | None = None  # for a ModelEndpoint
    parties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(f"unknown sensitivity {self.sensitivity!r}")

    def party(self, attribute: str) -> str | None:
        """The user `attribute` names, or None."""
        return next((user for name, user in self.parties if name == attribute), None)


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    policy_ids: tuple[str, ...]  # the @id of every policy that determined the decision
    errors: tuple[str, ...] = field(default=())


class PolicyEngine:
    """The parsed, validated policy set; `decide` is the only evaluation path."""

    def __init__(
        self,
        policies: str,
        schema: str,
        parties: Mapping[str, Sequence[str]] | None = None,
        actions: Sequence[PolicyAction] = (),
    ) -> None:
        result = cedarpy.validate_policies(policies, schema)
        if not result.validation_passed:
            raise PolicyError("; ".join(str(e) for e in result.errors) or "invalid policies")
        self._policies = cedarpy.PolicySet.from_str(policies)
        # Requests and entities are checked against the schema too: a principal type an
        # action does not apply to, or a missing attribute, is an error, and so a denial.
        self._schema = cedarpy.Schema.from_str(schema)
        parsed = json.loads(cedarpy.policies_to_json_str(policies))
        self._names = _annotated_ids(parsed)
        # The attributes of each (qualified) entity type that are users, as the apps declare.
        self._parties = {kind: tuple(names) for kind, names in (parties or {}).items()}
        # The actions routes may declare: the runtime's and the composed apps'.
        self._actions = {a.qualified: a for a in (*RuntimeAction.ALL, *actions)}
        # A decision depends only on what the request carries. When no policy names a user,
        # service or resource by id (only roles and actions), ids cannot change it, only
        # which of them are the same (is the caller the resource's owner?), so decisions are
        # remembered by everything else: the API path then skips Cedar.
        self._ids_matter = any(not _names_no_one(kind) for kind in _entity_types(parsed))
        self._remembered: OrderedDict[tuple[Any, ...], PolicyDecision] = OrderedDict()
        self._refusals: dict[tuple[Any, ...], bool] = {}

    @classmethod
    def compose(
        cls, fragments: Sequence[PolicyFragment] = (), runtime: Path = POLICY_DIR
    ) -> PolicyEngine:
        """The runtime's Cedar (in `runtime`) with each app's fragment: see
        `ramparts.policy.compose.compose`."""
        from ramparts.policy.compose import compose  # noqa: PLC0415 (compose builds on us)

        return compose(fragments, runtime)

    def action(self, qualified: str) -> PolicyAction | None:
        """The declared action of that qualified name (None: no such action here)."""
        return self._actions.get(qualified)

    def party_attributes(self, entity_type: str) -> tuple[str, ...]:
        """The attributes of `entity_type` (qualified) that name a user: its parties."""
        return self._parties.get(entity_type, ())

    def decide(
        self,
        subject: Subject,
        action: PolicyAction,
        target: Target,
        channel: Channel,
        held: bool = False,
    ) -> PolicyDecision:
        """Cedar's decision (remembered). `held`: the AI gateway asks whether a model's call
        may wait as an approval request (only on the `ai_tool` channel; see `RequestContext`
        in the schema)."""
        key = (
            subject.service,
            subject.tenant,
            subject.region,
            subject.roles,
            subject.amr,
            action.qualified,
            target.type,
            target.tenant,
            target.sensitivity,
            target.region,
            channel,
            held,
            *(
                (subject.id, target.id, target.parties)
                if self._ids_matter
                else _parties(subject, target)
            ),
        )
        remembered = self._remembered.get(key)
        if remembered is not None:
            self._remembered.move_to_end(key)
            return remembered
        decision = self.evaluate(subject, action, target, channel, held)
        self._remembered[key] = decision
        if len(self._remembered) > REMEMBERED_DECISIONS:
            self._remembered.popitem(last=False)
        return decision

    def refuses_outright(
        self,
        subject: Subject,
        action: PolicyAction,
        sensitivity: str,
        channel: Channel,
        held: bool = False,
    ) -> bool:
        """Whether Cedar denies `action` to `subject` whatever the resource (of `sensitivity`):
        partial evaluation with the resource unknown, so a condition on the resource (its
        tenant, owner, region) never decides it. A request can then be refused before its
        input is read. It never allows anything: `decide` on the real resource does that.
        Remembered, since only the subject's roles, factors and channel can change it."""
        key = (subject.service, subject.tenant, subject.region, subject.roles, subject.amr)
        _check_held(channel, held)
        key += (
            action.qualified,
            sensitivity,
            channel,
            held,
            *((subject.id,) if self._ids_matter else ()),
        )
        refused = self._refusals.get(key)
        if refused is None:
            principal_type = "Service" if subject.service else "User"
            principal = {
                "uid": {"type": principal_type, "id": subject.id},
                "attrs": {"tenant": subject.tenant},
                "parents": [{"type": "Role", "id": role} for role in sorted(subject.roles)],
            }
            request = {
                "principal": f'{principal_type}::"{_escaped(subject.id)}"',
                "action": f'{action.cedar_type}::"{_escaped(action.name)}"',
                "context": {
                    "tenant": subject.tenant,
                    "region": subject.region,
                    "sensitivity": sensitivity,
                    "amr": sorted(subject.amr),
                    "channel": channel.value,
                    "held": held,
                },
            }
            result = cedarpy.is_authorized_partial(
                request, self._policies, [principal], schema=self._schema
            )
            # Deny, or no decision and nothing left to decide (an invalid request): refused.
            refused = result.decision == cedarpy.Decision.Deny or (
                result.decision == cedarpy.Decision.NoDecision and not result.residuals
            )
            if len(self._refusals) >= REMEMBERED_DECISIONS:
                self._refusals.clear()
            self._refusals[key] = refused
        return refused

    def evaluate(
        self,
        subject: Subject,
        action: PolicyAction,
        target: Target,
        channel: Channel,
        held: bool = False,
    ) -> PolicyDecision:
        """Ask Cedar, every time (`decide` remembers the answers)."""
        _check_held(channel, held)
        if target.type != action.entity_type:
            raise ValueError(f"{action} applies to {action.entity_type}, not {target.type}")
        principal_type = "Service" if subject.service else "User"
        entities: list[dict[str, Any]] = [
            {
                "uid": {"type": principal_type, "id": subject.id},
                "attrs": {"tenant": subject.tenant},
                "parents": [{"type": "Role", "id": role} for role in sorted(subject.roles)],
            },
            {
                "uid": {"type": target.type, "id": target.id},
                "attrs": _target_attrs(target),
                "parents": [],
            },
        ]
        request = {
            "principal": {"type": principal_type, "id": subject.id},
            "action": {"type": action.cedar_type, "id": action.name},
            "resource": {"type": target.type, "id": target.id},
            "context": {
                "tenant": subject.tenant,
                "region": subject.region,
                "sensitivity": target.sensitivity,
                "amr": sorted(subject.amr),
                "channel": channel.value,
                "held": held,
            },
        }
        result = cedarpy.is_authorized(request, self._policies, entities, schema=self._schema)
        reasons = tuple(sorted(self._names.get(r, r) for r in result.diagnostics.reasons))
        errors = tuple(str(e) for e in result.diagnostics.errors)
        # An evaluation error is a deny (Cedar skips the erroring policy): say so.
        return PolicyDecision(bool(result.allowed), reasons, errors)


def _check_held(channel: Channel, held: bool) -> None:
    """Only the AI gateway holds a call, and only a model's (`ai_tool`) call."""
    if held and channel is not Channel.AI_TOOL:
        raise ValueError(f"a request on the {channel.value} channel is never held")


def _parties(subject: Subject, target: Target) -> tuple[tuple[str, bool, int], ...]:
    """Per party: whether it is the caller, and the first party that is the same user (so
    which parties coincide): all a policy that names no id can learn from the ids."""
    users = [user for _, user in target.parties]
    return tuple((name, user == subject.id, users.index(user)) for name, user in target.parties)


def _names_no_one(entity_type: str) -> bool:
    """Roles and actions are named by policies; naming them says nothing about who asks."""
    return entity_type in {"Role", "Action"} or entity_type.endswith("::Action")


def _escaped(entity_id: str) -> str:
    return entity_id.replace("\\", "\\\\").replace('"', '\\"')


def _target_attrs(target: Target) -> dict[str, Any]:
    if target.type == "ModelEndpoint":
        return {"region": target.region or ""}
    attrs: dict[str, Any] = {"tenant": target.tenant or "", "sensitivity": target.sensitivity}
    for name, user in target.parties:
        attrs[name] = {"__entity": {"type": "User", "id": user}}
    return attrs


def read_policies(directory: Path) -> str:
    """All `.cedar` files of a policy directory, in name order, as one policy text."""
    folder = directory / "policies" if (directory / "policies").is_dir() else directory
    files = sorted(folder.glob("*.cedar"))
    if not files:
        raise PolicyError(f"no .cedar files in {folder}")
    return "\n".join(f.read_text() for f in files)


def _entity_types(node: Any) -> set[str]:
    """Every entity type a policy (in Cedar's JSON form) names literally."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"entity", "__entity"} and isinstance(value, dict) and "type" in value:
                found.add(str(value["type"]))
            elif key == "entities" and isinstance(value, list):
                found |= {str(v["type"]) for v in value if isinstance(v, dict) and "type" in v}
            else:
                found |= _entity_types(value)
    elif isinstance(node, list):
        for item in node:
            found |= _entity_types(item)
    return found


def _annotated_ids(parsed: dict[str, Any]) -> dict[str, str]:
    """Cedar names policies policy0, policy1, …; map those to their @id annotations."""
    names = {}
    for generated, policy in parsed.get("staticPolicies", {}).items():
        annotation = (policy.get("annotations") or {}).get("id")
        if not annotation:
            raise PolicyError(f"policy {generated} has no @id annotation")
        names[generated] = annotation
    duplicates = sorted(name for name, n in Counter(names.values()).items() if n > 1)
    if duplicates:
        raise PolicyError(f"duplicate policy @id: {', '.join(duplicates)}")
    return names
