"""Cedar, loaded once: the schema, the policies, and one decision per request.

The policies live in `policies/*.cedar` beside the schema (`schema.cedarschema`); both are read
and validated once when the engine is built, and the parsed policy set is reused for every
decision, so no request pays for parsing. Each policy carries an `@id("...")` annotation, the
name a decision reports (and the audit trail records) for the policies that determined it.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import cedarpy

__all__ = [
    "POLICY_DIR",
    "SENSITIVITIES",
    "Channel",
    "PolicyAction",
    "PolicyDecision",
    "PolicyEngine",
    "PolicyError",
    "Subject",
    "Target",
]

POLICY_DIR = Path(__file__).resolve().parent
REMEMBERED_DECISIONS = 65_536
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


class PolicyError(Exception):
    """The policies do not parse or do not validate against the schema."""


class PolicyAction(StrEnum):
    """Every action a route or an AI tool may ask for; the Cedar action of the same name."""

    QUOTE_LIST = "quote.list"
    QUOTE_READ = "quote.read"
    QUOTE_CREATE = "quote.create"
    QUOTE_UPDATE = "quote.update"
    QUOTE_DELETE = "quote.delete"
    QUOTE_SUBMIT = "quote.submit"
    QUOTE_ACCEPT = "quote.accept"
    DEPOSIT_CHARGE = "deposit.charge"
    REFUND_ISSUE = "refund.issue"
    DISBURSEMENT_APPROVE = "disbursement.approve"
    AUDIT_READ = "audit.read"
    ASSISTANT_APPROVE = "assistant.approve"
    ASSISTANT_CONFIGURE = "assistant.configure"
    MODEL_CALL = "model.call"

    @property
    def resource_type(self) -> str:
        return _RESOURCE_TYPES[self.value.split(".")[0]]


_RESOURCE_TYPES = {
    "quote": "Quote",
    "deposit": "Deposit",
    "refund": "Refund",
    "disbursement": "Disbursement",
    "audit": "AuditLog",
    "assistant": "Assistant",
    "model": "ModelEndpoint",
}


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
    """What is asked about: `type` is a Cedar entity type (see `PolicyAction.resource_type`).

    A quote's parties are user ids (`Subject.id`): `buyer` asked for it, `seller` answers it
    (none: open to every seller). A target without a buyer is owned by nobody, so no
    ownership rule allows anything on it."""

    type: str
    id: str
    tenant: str | None = None
    sensitivity: str = "internal"
    region: str | None = None  # for a ModelEndpoint
    buyer: str | None = None  # for a Quote
    seller: str | None = None  # for a Quote

    def __post_init__(self) -> None:
        if self.sensitivity not in SENSITIVITIES:
            raise ValueError(f"unknown sensitivity {self.sensitivity!r}")


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    policy_ids: tuple[str, ...]  # the @id of every policy that determined the decision
    errors: tuple[str, ...] = field(default=())


class PolicyEngine:
    """The parsed, validated policy set; `decide` is the only evaluation path."""

    def __init__(self, policies: str, schema: str) -> None:
        result = cedarpy.validate_policies(policies, schema)
        if not result.validation_passed:
            raise PolicyError("; ".join(str(e) for e in result.errors) or "invalid policies")
        self._policies = cedarpy.PolicySet.from_str(policies)
        # Requests and entities are checked against the schema too: a principal type an
        # action does not apply to, or a missing attribute, is an error, and so a denial.
        self._schema = cedarpy.Schema.from_str(schema)
        parsed = json.loads(cedarpy.policies_to_json_str(policies))
        self._names = _annotated_ids(parsed)
        # A decision depends only on what the request carries. When no policy names a user,
        # service or resource by id (only roles and actions), ids cannot change it, only
        # which of them are the same (is the caller the quote's buyer?), so decisions are
        # remembered by everything else: the API path then skips Cedar.
        self._ids_matter = bool(_entity_types(parsed) - {"Role", "Action"})
        self._remembered: OrderedDict[tuple[Any, ...], PolicyDecision] = OrderedDict()
        self._refusals: dict[tuple[Any, ...], bool] = {}

    @classmethod
    def load(cls, directory: Path = POLICY_DIR, schema: Path | None = None) -> PolicyEngine:
        """The policies in `directory/policies/*.cedar` (or `directory/*.cedar`)."""
        return cls(
            read_policies(directory), (schema or POLICY_DIR / "schema.cedarschema").read_text()
        )

    def decide(
        self, subject: Subject, action: PolicyAction, target: Target, channel: Channel
    ) -> PolicyDecision:
        key = (
            subject.service,
            subject.tenant,
            subject.region,
            subject.roles,
            subject.amr,
            action,
            target.type,
            target.tenant,
            target.sensitivity,
            target.region,
            channel,
            *(
                (subject.id, target.id, target.buyer, target.seller)
                if self._ids_matter
                else _parties(subject, target)
            ),
        )
        remembered = self._remembered.get(key)
        if remembered is not None:
            self._remembered.move_to_end(key)
            return remembered
        decision = self.evaluate(subject, action, target, channel)
        self._remembered[key] = decision
        if len(self._remembered) > REMEMBERED_DECISIONS:
            self._remembered.popitem(last=False)
        return decision

    def refuses_outright(
        self, subject: Subject, action: PolicyAction, sensitivity: str, channel: Channel
    ) -> bool:
        """Whether Cedar denies `action` to `subject` whatever the resource (of `sensitivity`):
        partial evaluation with the resource unknown, so a condition on the resource (its
        tenant, owner, region) never decides it. A request can then be refused before its
        input is read. It never allows anything: `decide` on the real resource does that.
        Remembered, since only the subject's roles, factors and channel can change it."""
        key = (subject.service, subject.tenant, subject.region, subject.roles, subject.amr)
        key += (action, sensitivity, channel, *((subject.id,) if self._ids_matter else ()))
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
                "action": f'Action::"{action.value}"',
                "context": {
                    "tenant": subject.tenant,
                    "region": subject.region,
                    "sensitivity": sensitivity,
                    "amr": sorted(subject.amr),
                    "channel": channel.value,
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
        self, subject: Subject, action: PolicyAction, target: Target, channel: Channel
    ) -> PolicyDecision:
        """Ask Cedar, every time (`decide` remembers the answers)."""
        if target.type != action.resource_type:
            raise ValueError(f"{action} applies to {action.resource_type}, not {target.type}")
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
            "action": {"type": "Action", "id": action.value},
            "resource": {"type": target.type, "id": target.id},
            "context": {
                "tenant": subject.tenant,
                "region": subject.region,
                "sensitivity": target.sensitivity,
                "amr": sorted(subject.amr),
                "channel": channel.value,
            },
        }
        result = cedarpy.is_authorized(request, self._policies, entities, schema=self._schema)
        reasons = tuple(sorted(self._names.get(r, r) for r in result.diagnostics.reasons))
        errors = tuple(str(e) for e in result.diagnostics.errors)
        # An evaluation error is a deny (Cedar skips the erroring policy): say so.
        return PolicyDecision(bool(result.allowed), reasons, errors)


def _parties(subject: Subject, target: Target) -> tuple[bool | None, ...]:
    """Which of the caller, the buyer and the seller are the same user, and which are absent:
    all a policy that names no id can learn from the ids."""
    return (
        None if target.buyer is None else target.buyer == subject.id,
        None if target.seller is None else target.seller == subject.id,
        target.buyer is not None and target.buyer == target.seller,
    )


def _escaped(entity_id: str) -> str:
    return entity_id.replace("\\", "\\\\").replace('"', '\\"')


def _target_attrs(target: Target) -> dict[str, Any]:
    if target.type == "ModelEndpoint":
        return {"region": target.region or ""}
    attrs: dict[str, Any] = {"tenant": target.tenant or "", "sensitivity": target.sensitivity}
    if target.type == "Quote":
        for party in ("buyer", "seller"):
            user = getattr(target, party)
            if user is not None:
                attrs[party] = {"__entity": {"type": "User", "id": user}}
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
