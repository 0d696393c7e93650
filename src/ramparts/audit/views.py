"""HTTP: a tenant's trail, for whom policy lets read it (its admins); each read is recorded.
Its verification too: the same walk as `ramparts audit verify`, over the tenant's own chain.

Authentication and authorization live above this layer, so the router takes them as one
dependency that returns the authorized caller as an `Actor`.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog, EventQuery, search_events
from ramparts.audit.verify import ChainReport, verify_chain
from ramparts.db.engine import BIGINT_MAX, Database, libpq
from ramparts.db.request import request_session
from ramparts.problems import Problem, ProblemType

__all__ = ["build_router"]

ACTION_FILTER = r"^[a-z_]+(:[a-z_]+){2}$|^[a-z_]+(:[a-z_]+)?:\*$"


def _iso_8601(value: object) -> object:
    """Only ISO 8601: pydantic would also read a number as seconds since 1970 (`until=0.5`)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


IsoMoment = Annotated[datetime, BeforeValidator(_iso_8601)]


def build_router(
    audit: AuditLog,
    reader: Callable[..., Awaitable[Actor]],
    declared: dict[str, Any],
    database: Database,
) -> APIRouter:
    """`reader`, a FastAPI dependency, authenticates the caller and authorizes reading its
    tenant's trail (raising a 403 problem, recorded, when policy says no); `declared` is the
    route's policy action. The routes read in the request's transaction, but the verification,
    which walks the chain as committed on a connection of its own (`database`'s role)."""
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
        since: Annotated[IsoMoment | None, Query(description="ISO 8601, inclusive.")] = None,
        until: Annotated[IsoMoment | None, Query(description="ISO 8601, exclusive.")] = None,
        after: Annotated[
            int, Query(ge=0, le=BIGINT_MAX, description="Sequence to continue after.")
        ] = 0,
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

    @router.get("/api/audit/verification", openapi_extra=declared)
    async def verification(
        actor: Annotated[Actor, Depends(reader)],
        session: Annotated[AsyncSession, Depends(request_session)],
    ) -> dict[str, Any]:
        """Recompute every hash and link of the caller's tenant's chain and check its signed
        checkpoints: `ok`, how many events, the newest checkpoint, every problem located."""
        if actor.tenant is None:  # pragma: no cover - authenticated callers have a tenant
            raise Problem(403, ProblemType.FORBIDDEN)
        report = await asyncio.to_thread(_verify, database, actor.tenant)
        await audit.record(
            session,
            actor,
            Action.AUDIT_EVENTS_READ,
            Resource("audit_log", str(actor.tenant)),
            Decision.ALLOW,
            {"verification": True, "intact": report.intact, "events": report.events},
        )
        return {
            "ok": report.intact,
            "events": report.events,
            "head_seq": report.head_seq,
            "checkpoint": {"count": report.checkpoints, "seq": report.last_checkpoint_seq},
            "problems": [asdict(p) for p in sorted(report.problems, key=lambda p: p.seq)],
        }

    return router


def _verify(database: Database, tenant: uuid.UUID) -> ChainReport:
    """The walk is synchronous (psycopg), so it runs in a thread, on one short connection as
    the runtime role: row-level security holds it to the tenant it names."""
    with psycopg.connect(libpq(database.engine.url), **database.driver_options) as conn:
        return verify_chain(conn, tenant, count_queued=False)
