"""The one enforcement point: `Authorizer.authorize(principal, action, resource, context)`.

Routes and the AI tool gateway call it; it asks Cedar, records the decision (allow and deny,
with the policies that determined it) in the audit trail, and returns it. Deny by default: no
permit, an evaluation error or a forbid all come back as a denial.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.db.engine import Database
from ramparts.identity.auth import Principal, actor_of
from ramparts.metrics import POLICY_DENIALS
from ramparts.policy.engine import (
    SENSITIVITIES,
    Channel,
    PolicyAction,
    PolicyDecision,
    PolicyEngine,
    Subject,
    Target,
)
from ramparts.problems import Problem, ProblemType

__all__ = [
    "Authorizer",
    "RequestContext",
    "TenantRegions",
    "channel_of",
    "subject_of",
]


@dataclass(frozen=True)
class RequestContext:
    """What the request says about itself beyond who and what: its channel, and the data
    region of the caller's tenant. `held` (Cedar's `context.held`): the AI gateway asks
    whether a model's call that it will not run by itself may wait as an approval request for
    a different person; only ever on the `ai_tool` channel."""

    channel: Channel
    region: str
    held: bool = False

    def __post_init__(self) -> None:
        if self.held and self.channel is not Channel.AI_TOOL:
            raise ValueError(f"a request on the {self.channel.value} channel is never held")

    def holding(self) -> RequestContext:
        """This `ai_tool` context, asking whether the call may be held for approval."""
        return replace(self, held=True)


class TenantRegions:
    """Each tenant's data region as this process knows it. A region is set when its tenant is
    created and never changes, so it is read once per tenant and process: deciding adds no
    round trip to a request."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._known: dict[uuid.UUID, str] = {}

    async def of(self, tenant_id: uuid.UUID, session: AsyncSession | None = None) -> str:
        """`tenant_id`'s region, read the first time in `session` (a tenant session of that
        tenant: a caller that holds a transaction never waits on the pool for a second one)
        or, without one, in a transaction of its own. The runtime role may read no more of
        a tenant than its region."""
        region = self._known.get(tenant_id)
        if region is None:
            if session is None:
                async with self._database.tenant_session(tenant_id) as own:
                    region = await _tenant_region(own)
            else:
                region = await _tenant_region(session)
            self._known[tenant_id] = region
        return region


async def _tenant_region(session: AsyncSession) -> str:
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
    def __init__(self, engine: PolicyEngine, audit: AuditLog, regions: TenantRegions) -> None:
        self._engine = engine
        self._audit = audit
        self._regions = regions

    async def context(
        self, principal: Principal, *, ui_client: str, session: AsyncSession | None = None
    ) -> RequestContext:
        """The caller's channel (its token's client says UI or API; a service is a service)
        and its tenant's data region (`TenantRegions.of`, in `session` when given)."""
        return RequestContext(
            channel_of(principal, ui_client=ui_client),
            await self._regions.of(principal.tenant_id, session),
        )

    def action(self, qualified: str) -> PolicyAction | None:
        """The action a route declares by its qualified name (None: none such is composed)."""
        return self._engine.action(qualified)

    def party_attributes(self, entity_type: str) -> tuple[str, ...]:
        """The attributes of `entity_type` that name a user (`PolicyEngine.party_attributes`)."""
        return self._engine.party_attributes(entity_type)

    def decide(
        self, principal: Principal, action: PolicyAction, resource: Target, context: RequestContext
    ) -> PolicyDecision:
        """What Cedar says, unrecorded: for what to offer (a tool list), never to act on."""
        return self._engine.decide(
            subject_of(principal, context.region), action, resource, context.channel, context.held
        )

    def refuses_outright(
        self, principal: Principal, action: PolicyAction, context: RequestContext
    ) -> bool:
        """Whether Cedar denies `action` to the caller on every resource it could name, of any
        sensitivity: unrecorded, for refusing early (see `PolicyEngine.refuses_outright`)."""
        subject = subject_of(principal, context.region)
        return all(
            self._engine.refuses_outright(
                subject, action, sensitivity, context.channel, context.held
            )
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
        """The audit event of a decision, for a caller that records a batch of them (a
        held request's says `"held": true`). A denial counts in
        `ramparts_policy_denials_total{action}` here, the one place every recorded decision
        passes."""
        if not decision.allowed:
            POLICY_DENIALS.labels(action.qualified).inc()
        details: dict[str, object] = {
            "action": action.qualified,
            "channel": context.channel.value,
            # The attributes Cedar was given (the tenant is on the resource): a reviewer sees
            # each decision was made on tenant, region and sensitivity.
            "region": context.region,
            "sensitivity": resource.sensitivity,
            "errors": list(decision.errors),
        }
        if context.held:
            details["held"] = True
        return Event(
            actor_of(principal),
            Action.AUTHORIZATION_DECIDED,
            Resource(resource.type, resource.id, {"tenant": resource.tenant}),
            Decision.ALLOW if decision.allowed else Decision.DENY,
            details,
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
            raise Problem(403, ProblemType.FORBIDDEN, detail or f"{action} is not allowed here")
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
            r
            for r in resources
            if self._engine.decide(subject, action, r, context.channel, context.held).allowed
        ]
        if len(kept) < len(resources):
            POLICY_DENIALS.labels(action.qualified).inc(len(resources) - len(kept))
            await self._audit.record(
                session,
                actor_of(principal),
                Action.AUTHORIZATION_DECIDED,
                Resource(resources[0].type, None),
                Decision.DENY,
                {
                    "action": action.qualified,
                    "channel": context.channel.value,
                    "withheld": [r.id for r in resources if r not in kept],
                },
            )
        return kept
