"""Permission before validation: one step in front of every route decides whether the caller
may do what the route declares at all, before FastAPI reads the route's parameters or body.

Without it a caller who may not create quotes learns the quote format from a 422 before the
handler's Cedar check answers 403. FastAPI solves a route's dependencies before it validates
its path, query and body, so the gate is an app-wide dependency; the edge has already refused
a malformed body (`RequestRulesMiddleware`, the same for every path, so it teaches nothing
about a route). The gate decides the route's declared action (`ramparts.routes`) on the
caller's own tenant: a refusal is a 403 problem, recorded like any denial. An allow is not
recorded here: it only lets the request reach its handler, whose decision on the real
resource is the one that counts and is recorded. Per-resource decisions stay in the handlers.
"""

from __future__ import annotations

import uuid

from fastapi import Request

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database
from ramparts.identity.auth import BearerAuthenticator, Principal, actor_of
from ramparts.policy.engine import SENSITIVITIES, PolicyAction, Target
from ramparts.policy.services import Authorizer, RequestContext, channel_of, tenant_region
from ramparts.problems import Problem
from ramparts.routes import ACTION_KEY, Exempt

__all__ = ["PermissionGate"]


class PermissionGate:
    """A FastAPI dependency of every route (see the module docstring).

    `public` routes pass; every other route needs a verified token first (401). A `self` route
    is a person's own account, so a service is refused (403 `not-a-user`). A Cedar action must
    be allowed to the caller on some resource of its tenant (of any sensitivity; a model
    endpoint of its tenant's region); otherwise 403. A route that declares nothing is refused.
    """

    def __init__(
        self,
        database: Database,
        bearer: BearerAuthenticator,
        authorizer: Authorizer,
        audit: AuditLog,
        *,
        ui_client: str,
    ) -> None:
        self._database = database
        self._bearer = bearer
        self._authorizer = authorizer
        self._audit = audit
        self._ui_client = ui_client
        # A tenant's region is set when it is created and never changes, so each process
        # reads it once per tenant: the gate adds no database round trip to a request.
        self._regions: dict[uuid.UUID, str] = {}

    async def __call__(self, request: Request) -> None:
        route = request.scope.get("route")
        declared = (getattr(route, "openapi_extra", None) or {}).get(ACTION_KEY)
        if declared == Exempt.PUBLIC:
            return
        if declared not in _DECLARATIONS:  # deny by default
            raise Problem(403, "forbidden", "Forbidden", "this route declares no authorization")
        principal = await self._bearer(request)
        if declared == Exempt.SELF:
            await self._require_person(principal)
            return
        action = PolicyAction(str(declared))
        context = RequestContext(
            channel_of(principal, ui_client=self._ui_client), await self._region(principal)
        )
        targets = _tenant_targets(action, str(principal.tenant_id), context.region)
        if any(self._authorizer.decide(principal, action, t, context).allowed for t in targets):
            return
        await self._authorizer.authorize(principal, action, targets[0], context)  # recorded
        raise Problem(403, "forbidden", "Forbidden", f"{action} is not allowed here")

    async def _region(self, principal: Principal) -> str:
        region = self._regions.get(principal.tenant_id)
        if region is None:
            async with self._database.tenant_session(principal.tenant_id) as session:
                region = await tenant_region(session)
            self._regions[principal.tenant_id] = region
        return region

    async def _require_person(self, principal: Principal) -> None:
        if principal.user_id is not None:
            return
        problem = Problem(
            403, "not-a-user", "Forbidden", "this endpoint is for users, not services"
        )
        await self._audit.record_apart(
            principal.tenant_id,
            actor_of(principal),
            Action.USER_ENDPOINT_REFUSED,
            Resource("user", None),
            Decision.DENY,
            {"reason": problem.detail, "status": problem.status},
        )
        raise problem


_DECLARATIONS = frozenset({*PolicyAction, *Exempt})


def _tenant_targets(action: PolicyAction, tenant: str, region: str) -> list[Target]:
    """What stands for "any resource of the caller's tenant" for `action`: one per sensitivity
    (least first), so no sensitivity a handler might meet is refused here; a model endpoint
    in the tenant's own region."""
    if action.resource_type == "ModelEndpoint":
        return [Target("ModelEndpoint", "*", region=region)]
    return [Target(action.resource_type, "*", tenant, s) for s in SENSITIVITIES]
