"""HTTP: a tenant's trail, for whom policy lets read it (its admins); each read is recorded.

Authentication and authorization live above this layer, so the router takes them as one
dependency that returns the authorized caller as an `Actor`.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog, EventQuery, search_events
from ramparts.db.request import request_session
from ramparts.problems import Problem, ProblemType

__all__ = ["build_router"]

ACTION_FILTER = r"^[a-z_]+(:[a-z_]+){2}$|^[a-z_]+(:[a-z_]+)?:\*$"


def build_router(
    audit: AuditLog, reader: Callable[..., Awaitable[Actor]], declared: dict[str, Any]
) -> APIRouter:
    """`reader`, a FastAPI dependency, authenticates the caller and authorizes reading its
    tenant's trail (raising a 403 problem, recorded, when policy says no); `declared` is the
    route's policy action. The route reads in the request's transaction."""
    router = APIRouter(tags=["audit"])

    @router.get("/api/audit/events", openapi_extra=declared)
    async def list_events(  # noqa: PLR0917 - FastAPI passes one parameter per filter
        actor: Annotated[Actor, Depends(reader)],
        session: Annotated[AsyncSession, Depends(request_session)],
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
            raise Problem(403, ProblemType.FORBIDDEN)
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise Problem(422, ProblemType.INVALID_REQUEST, "give times with a UTC offset")
        query = EventQuery(by, action, decision, since, until, after, limit)
        resource = Resource("audit_log", str(actor.tenant))
        filters = {k: str(v) for k, v in query.__dict__.items() if v is not None}
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
