"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ramparts.db.engine import Database
from ramparts.db.migrate import ExpectedSchema
from ramparts.problems import Problem, ProblemType
from ramparts.routes import Exempt, declares

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", openapi_extra=declares(Exempt.PUBLIC))
async def healthz() -> dict[str, str]:
    """The process is up. Touches nothing else, so it stays cheap under load."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=declares(Exempt.PUBLIC))
async def readyz(request: Request) -> dict[str, str | list[str]]:
    """The database answers as the runtime role and its schema has the expected revisions:
    the runtime's head and each served app's."""
    database: Database = request.app.state.database
    expected: ExpectedSchema = request.app.state.schema
    try:
        async with database.session() as session:
            found = list(await session.scalars(text("SELECT version_num FROM alembic_version")))
    except (SQLAlchemyError, OSError):
        raise Problem(
            503,
            ProblemType.NOT_READY,
            "database unavailable or not migrated; run `ramparts migrate`",
        ) from None
    missing = expected.missing(found)
    if missing:
        raise Problem(
            503,
            ProblemType.NOT_READY,
            f"schema at {', '.join(sorted(found)) or 'nothing'}, "
            f"lacks {', '.join(sorted(missing))}; run `ramparts migrate`",
        )
    return {"status": "ready", "schema": sorted(expected.heads)}
