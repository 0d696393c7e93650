"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ramparts.db.engine import Database
from ramparts.problems import Problem, ProblemType
from ramparts.routes import Exempt, declares

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", openapi_extra=declares(Exempt.PUBLIC))
async def healthz() -> dict[str, str]:
    """The process is up. Touches nothing else, so it stays cheap under load."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=declares(Exempt.PUBLIC))
async def readyz(request: Request) -> dict[str, str]:
    """The database answers as the runtime role and its schema is at the expected revision."""
    database: Database = request.app.state.database
    expected: str = request.app.state.schema_revision
    try:
        async with database.session() as session:
            found = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except (SQLAlchemyError, OSError):
        raise Problem(
            503,
            ProblemType.NOT_READY,
            "database unavailable or not migrated; run `ramparts migrate`",
        ) from None
    if found != expected:
        raise Problem(
            503,
            ProblemType.NOT_READY,
            f"schema at {found}, expected {expected}; run `ramparts migrate`",
        )
    return {"status": "ready", "schema": expected}
