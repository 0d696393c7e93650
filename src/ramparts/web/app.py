"""The ASGI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ramparts.config import Settings
from ramparts.db.engine import Database
from ramparts.db.migrate import head_revision
from ramparts.web import health
from ramparts.web.errors import install_error_handlers
from ramparts.web.middleware import (
    CatchAllMiddleware,
    EdgeMiddleware,
    RequestRulesMiddleware,
    StrictCORSMiddleware,
)

__all__ = ["create_app"]


def create_app(settings: Settings, database: Database) -> FastAPI:
    """Build the app around a runtime-role `Database`; the app disposes it on shutdown."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await database.dispose()

    # No Swagger/ReDoc pages: they need inline script and third-party CDNs, which the CSP
    # forbids. The OpenAPI document itself stays at /openapi.json.
    app = FastAPI(
        title="Ramparts",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        debug=False,
        lifespan=lifespan,
    )
    app.state.database = database
    app.state.schema_revision = head_revision()
    install_error_handlers(app)
    app.include_router(health.router)
    # Added innermost first. From the outside: headers, catch-all, CORS, catch-all, rules.
    app.add_middleware(RequestRulesMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(StrictCORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(EdgeMiddleware, hsts_max_age=settings.hsts_max_age)
    return app
