"""HTTP: the tenant's users, for whom policy lets list them (its admins).

Like the audit trail's router, authentication and authorization come as one dependency
(`reader`) that returns the authorized caller, so the route only reads.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Actor
from ramparts.db.request import request_session
from ramparts.identity.directory import list_users
from ramparts.problems import Problem, ProblemType

__all__ = ["build_router"]


def build_router(reader: Callable[..., Awaitable[Actor]], declared: dict[str, Any]) -> APIRouter:
    """`reader` authenticates the caller and authorizes listing its tenant's users (a 403
    problem, recorded, when policy says no); `declared` is the route's policy action."""
    router = APIRouter(tags=["identity"])

    @router.get("/api/admin/users", openapi_extra=declared)
    async def users(
        actor: Annotated[Actor, Depends(reader)],
        session: Annotated[AsyncSession, Depends(request_session)],
    ) -> dict[str, Any]:
        """The caller's tenant's users: roles, second factors (status only), lock state."""
        if actor.tenant is None:  # pragma: no cover - authenticated callers have a tenant
            raise Problem(403, ProblemType.FORBIDDEN)
        return {"items": await list_users(session, actor.tenant)}

    return router
