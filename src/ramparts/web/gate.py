"""Permission before validation: one step in front of every route decides whether the caller
may do what the route declares at all, before FastAPI reads the route's parameters or body.

Without it a caller who may not create a record learns its format from a 422 before the
handler's Cedar check answers 403. FastAPI solves a route's dependencies before it validates
its path, query and body, so the gate is an app-wide dependency; the edge has already refused
a malformed body (`RequestRulesMiddleware`, the same for every path, so it teaches nothing
about a route). The gate asks Cedar about the route's declared action (`ramparts.routes`)
with the resource left unknown: when the caller's roles, factors and channel are denied it on
every resource, the request is refused with a 403 problem, recorded like any denial. Anything
else goes on to the handler, whose decision on the real resource (its tenant, owner,
sensitivity) is the one that allows, and is recorded; per-resource decisions stay there.
"""

from __future__ import annotations

from fastapi import Request

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.request import RequestTransaction
from ramparts.identity.auth import BearerAuthenticator, Principal, actor_of
from ramparts.metrics import GATE_REFUSALS
from ramparts.policy.engine import SENSITIVITIES, PolicyAction, RuntimeAction, Target
from ramparts.policy.services import Authorizer, RequestContext
from ramparts.problems import Problem, ProblemType
from ramparts.routes import ACTION_KEY, Exempt, people_only

__all__ = ["PermissionGate"]


class PermissionGate:
    """A FastAPI dependency of every route (see the module docstring).

    `public` routes pass; every other route needs a verified token first (401). A `self` route
    is a person's own account and a people-only route serves people, so a service is refused
    (403 `not-a-user`). A Cedar action denied to the caller whatever the resource is refused
    (403): for a service, that is every action whose schema `appliesTo` names no `Service`
    (Cedar refuses such a request as invalid). A route that declares nothing is refused.
    Each refusal counts in `ramparts_gate_refusals_total{reason}`.
    """

    def __init__(
        self,
        bearer: BearerAuthenticator,
        authorizer: Authorizer,
        audit: AuditLog,
        *,
        ui_client: str,
    ) -> None:
        self._bearer = bearer
        self._authorizer = authorizer
        self._audit = audit
        self._ui_client = ui_client

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        extra = getattr(route, "openapi_extra", None)
        declared = (extra or {}).get(ACTION_KEY)
        if declared in _OWN_CHECKS:
            return
        action = self._authorizer.action(str(declared)) if declared is not None else None
        if action is None and declared not in _EXEMPTIONS:  # deny by default
            GATE_REFUSALS.labels("undeclared").inc()
            raise Problem(403, ProblemType.FORBIDDEN, "this route declares no authorization")
        try:
            principal = await self._bearer(request)
        except Problem:
            GATE_REFUSALS.labels("unauthenticated").inc()
            raise
        if people_only(extra):
            await self._require_person(principal)
        if action is None:  # a `self` route: the caller's own account
            return
        # The tenant's region is known to the process after its first request (no round
        # trip); the first time, it is read in the request's transaction when there is one.
        transaction = RequestTransaction.of(request.scope)
        context = await self._authorizer.context(
            principal,
            ui_client=self._ui_client,
            session=transaction.session if transaction is not None else None,
        )
        if not self._authorizer.refuses_outright(principal, action, context):
            return
        # Recorded like any denial, on what stands for the tenant's resources of that kind.
        await self._authorizer.authorize(
            principal, action, _tenant_target(action, principal, context), context
        )
        GATE_REFUSALS.labels("denied_outright").inc()
        raise Problem(403, ProblemType.FORBIDDEN, f"{action} is not allowed here")

    async def _require_person(self, principal: Principal) -> None:
        if principal.user_id is not None:
            return
        GATE_REFUSALS.labels("not_a_user").inc()
        problem = Problem(403, ProblemType.NOT_A_USER, "this endpoint is for users, not services")
        await self._audit.record_apart(
            principal.tenant_id,
            actor_of(principal),
            Action.USER_ENDPOINT_REFUSED,
            Resource("user", None),
            Decision.DENY,
            {"reason": problem.detail, "status": problem.status},
        )
        raise problem


_EXEMPTIONS = frozenset(Exempt)
#: Routes that check their callers themselves: anyone (`public`), a page's session cookie
#: (`page`), the scraper's network or token (`scrape`).
_OWN_CHECKS = frozenset({Exempt.PUBLIC, Exempt.PAGE, Exempt.SCRAPE})


def _tenant_target(action: PolicyAction, principal: Principal, context: RequestContext) -> Target:
    """What the recorded denial names: any resource of the action's kind in the caller's
    tenant (a model endpoint of its region)."""
    if action.entity_type == RuntimeAction.MODEL_CALL.entity_type:
        return Target(action.entity_type, "*", region=context.region)
    return Target(action.entity_type, "*", str(principal.tenant_id), SENSITIVITIES[0])
