"""The one enforcement point: `Authorizer.authorize(principal, action, resource, context)`.

Routes and the AI tool gateway call it; it asks Cedar, records the decision (allow and deny,
with the policies that determined it) in the audit trail, and returns it. Deny by default: no
permit, an evaluation error or a forbid all come back as a denial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.identity.auth import Principal, actor_of
from ramparts.policy.engine import (
    SENSITIVITIES,
    Channel,
    PolicyAction,
    PolicyDecision,
    PolicyEngine,
    Subject,
    Target,
)
from ramparts.problems import Problem

__all__ = [
    "Authorizer",
    "RequestContext",
    "channel_of",
    "request_context",
    "subject_of",
    "tenant_region",
]


@dataclass(frozen=True)
class RequestContext:
    """What the request says about itself beyond who and what: its channel, and the data
    region of the caller's tenant."""

    channel: Channel
    region: str


async def request_context(
    session: AsyncSession, principal: Principal, *, ui_client: str
) -> RequestContext:
    """The caller's channel (its token's client says UI or API; a service is a service) and
    its tenant's data region. `session` is a tenant session of the caller's tenant: the region
    is all the runtime role may read of it."""
    return RequestContext(channel_of(principal, ui_client=ui_client), await tenant_region(session))


async def tenant_region(session: AsyncSession) -> str:
    """The data region of the tenant of `session` (a tenant session)."""
    return str(await session.scalar(text("SELECT ramparts_tenant_region()")) or "")


def channel_of(principal: Principal, *, ui_client: str) -> Channel:
    """How the caller reaches us: a service is a service; a person through our UI or the API."""
    if principal.user_id is None:
        return Channel.SERVICE
    if principal.client_id == ui_client:
        return Channel.UI
    return Channel.API


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

    def decide(
        self, principal: Principal, action: PolicyAction, resource: Target, context: RequestContext
    ) -> PolicyDecision:
        """What Cedar says, unrecorded: for what to offer (a tool list), never to act on."""
        return self._engine.decide(
            subject_of(principal, context.region), action, resource, context.channel
        )

    def refuses_outright(
        self, principal: Principal, action: PolicyAction, context: RequestContext
    ) -> bool:
        """Whether Cedar denies `action` to the caller on every resource it could name, of any
        sensitivity: unrecorded, for refusing early (see `PolicyEngine.refuses_outright`)."""
        subject = subject_of(principal, context.region)
        return all(
            self._engine.refuses_outright(subject, action, sensitivity, context.channel)
            for sensitivity in SENSITIVITIES
        )

    async def authorize(
        self,
        principal: Principal,
        action: PolicyAction,
        resource: Target,
        context: RequestContext,
        *,
        session: AsyncSession | None = None,
        deny_apart: bool = True,
    ) -> PolicyDecision:
        """Decide and record. With `session`, an allow joins that transaction (so it commits
        with what it allowed) and so does a denial when `deny_apart` is false; otherwise a
        denial is written on its own, to survive the rollback that follows a refused request.

        A request that goes on after a denial (a bulk call, a filtered list) passes
        `deny_apart=False`: its transaction commits, so the denial needs no transaction of
        its own."""
        decision = self.decide(principal, action, resource, context)
        event = self.event(principal, action, resource, context, decision)
        if session is not None and (decision.allowed or not deny_apart):
            await self._audit.record_many(session, [event])
        else:
            await self._audit.record_many_apart(principal.tenant_id, [event])
        return decision

    @staticmethod
    def event(
        principal: Principal,
        action: PolicyAction,
        resource: Target,
        context: RequestContext,
        decision: PolicyDecision,
    ) -> Event:
        """The audit event of a decision, for a caller that records a batch of them."""
        return Event(
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
            decision.policy_ids,
        )

    async def require(
        self,
        principal: Principal,
        action: PolicyAction,
        resource: Target,
        context: RequestContext,
        *,
        session: AsyncSession | None = None,
        detail: str | None = None,
    ) -> PolicyDecision:
        """`authorize`, answering a denial with a 403 problem."""
        decision = await self.authorize(principal, action, resource, context, session=session)
        if not decision.allowed:
            raise Problem(403, "forbidden", "Forbidden", detail or f"{action} is not allowed here")
        return decision

    async def permitted(
        self,
        principal: Principal,
        action: PolicyAction,
        resources: Sequence[Target],
        context: RequestContext,
        *,
        session: AsyncSession,
    ) -> list[Target]:
        """The resources `action` is allowed on, for filtering a listing: decided one by one,
        recorded as one event that counts what was withheld."""
        subject = subject_of(principal, context.region)
        kept = [
            r for r in resources if self._engine.decide(subject, action, r, context.channel).allowed
        ]
        if len(kept) < len(resources):
            await self._audit.record(
                session,
                actor_of(principal),
                Action.AUTHORIZATION_DECIDED,
                Resource(resources[0].type, None),
                Decision.DENY,
                {
                    "action": action.value,
                    "channel": context.channel.value,
                    "withheld": [r.id for r in resources if r not in kept],
                },
            )
        return kept
