"""The one enforcement point: `Authorizer.authorize(principal, action, resource, context)`.

Routes and the AI tool gateway call it; it asks Cedar, records the decision (allow and deny,
with the policies that determined it) in the audit trail, and returns it. Deny by default: no
permit, an evaluation error or a forbid all come back as a denial.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.identity.auth import Principal, actor_of
from ramparts.policy.engine import (
    Channel,
    PolicyAction,
    PolicyDecision,
    PolicyEngine,
    Subject,
    Target,
)

__all__ = ["Authorizer", "RequestContext"]


@dataclass(frozen=True)
class RequestContext:
    """What the request says about itself beyond who and what: its channel, and the data
    region of the caller's tenant."""

    channel: Channel
    region: str


def subject_of(principal: Principal, region: str) -> Subject:
    return Subject(
        id=principal.subject,
        tenant=str(principal.tenant_id),
        region=region,
        roles=frozenset(principal.roles),
        amr=frozenset(principal.amr),
        service=principal.user_id is None,
    )


class Authorizer:
    def __init__(self, engine: PolicyEngine, audit: AuditLog) -> None:
        self._engine = engine
        self._audit = audit

    async def authorize(
        self,
        principal: Principal,
        action: PolicyAction,
        resource: Target,
        context: RequestContext,
        *,
        session: AsyncSession | None = None,
    ) -> PolicyDecision:
        """Decide and record. With `session` the record joins its transaction (record last,
        before commit); without, it is written on its own, so a denial survives a rollback."""
        decision = self._engine.decide(
            subject_of(principal, context.region), action, resource, context.channel
        )
        parts = (
            actor_of(principal),
            Action.AUTHORIZATION_DECIDED,
            Resource(resource.type, resource.id, {"tenant": resource.tenant}),
            Decision.ALLOW if decision.allowed else Decision.DENY,
            {
                "action": action.value,
                "channel": context.channel.value,
                "sensitivity": resource.sensitivity,
                "errors": list(decision.errors),
            },
        )
        if session is not None:
            await self._audit.record(session, *parts, policy_ids=decision.policy_ids)
        else:
            await self._audit.record_apart(
                principal.tenant_id, *parts, policy_ids=decision.policy_ids
            )
        return decision
