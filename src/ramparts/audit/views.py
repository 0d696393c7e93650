"""HTTP: a tenant's admins read their tenant's audit trail; each read is itself recorded.

Authentication lives above this layer, so the router takes it as a dependency that returns the
caller as an `Actor`; the admin check and its audit happen here, in one place.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog, EventQuery, search_events
from ramparts.db.engine import Database
from ramparts.problems import Problem

__all__ = ["ADMIN_ROLE", "build_router"]

ADMIN_ROLE = "admin"
ACTION_FILTER = r"^[a-z_]+(:[a-z_]+){2}$|^[a-z_]+(:[a-z_]+)?:\*$"


def build_router(
    database: Database, audit: AuditLog, caller: Callable[[Request], Awaitable[Actor]]
) -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/api/audit/events")
    async def list_events(  # noqa: PLR0917 - FastAPI passes one parameter per filter
        actor: Annotated[Actor, Depends(caller)],
        by: Annotated[
            str | None, Query(alias="actor", max_length=200, description="Actor id.")
        ] = None,
        action: Annotated[
            str | None,
            Query(pattern=ACTION_FILTER, description="A tag, or a prefix like identity:*."),
        ] = None,
        decision: Decision | None = None,
        since: Annotated[datetime | None, Query(description="ISO 8601, inclusive.")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive.")] = None,
        after: Annotated[int, Query(ge=0, description="Sequence to continue after.")] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """The caller's tenant's events, oldest first; page with `after=<next_after>`."""
        if actor.tenant is None:  # pragma: no cover - authenticated callers have a tenant
            raise Problem(403, "forbidden", "Forbidden")
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise Problem(
                    422, "invalid-request", "Invalid request", "give times with a UTC offset"
                )
        query = EventQuery(by, action, decision, since, until, after, limit)
        resource = Resource("audit_log", str(actor.tenant))
        filters = {k: str(v) for k, v in query.__dict__.items() if v is not None}
        if ADMIN_ROLE not in actor.roles:
            await audit.record_apart(
                actor.tenant, actor, Action.AUDIT_EVENTS_READ, resource, Decision.DENY, filters
            )
            raise Problem(403, "forbidden", "Forbidden", "reading the audit trail needs admin")
        async with database.tenant_session(actor.tenant) as session:
            items = await search_events(session, actor.tenant, query)
            await audit.record(
                session,
                actor,
                Action.AUDIT_EVENTS_READ,
                resource,
                Decision.ALLOW,
                {**filters, "returned": len(items)},
            )
        return {
            "items": items,
            "next_after": items[-1]["seq"] if len(items) == limit else None,
        }

    return router
