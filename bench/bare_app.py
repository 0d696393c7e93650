"""The whole-app benchmark's baseline (`bench/api.py`): `GET` and `POST /api/quotes` with no
authentication, authorization, row-level security or audit, connected as the database owner.

Per request one transaction running the data-layer calls the real routes run, returning the
same JSON. The caller is named, not proven: `Authorization: Bearer <tenant id>:<user id>`.
uvicorn starts it with the app's server settings (`uvicorn --factory bare_app:create_app`):
the database URL and the pool size (`size,overflow`) come from the environment.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from ramparts.db.engine import Database
from ramparts.quotes.services import LineItem, Party, QuoteService
from ramparts.quotes.views import QuoteIn, quote_json

DATABASE_URL = "BENCH_BARE_DATABASE_URL"
POOL = "BENCH_BARE_POOL"


def caller(request: Request) -> tuple[uuid.UUID, uuid.UUID]:
    named = request.headers.get("authorization", "").partition(" ")[2]
    tenant, _, user = named.partition(":")
    try:
        return uuid.UUID(tenant), uuid.UUID(user)
    except ValueError:
        raise HTTPException(401, "name the caller: Bearer <tenant id>:<user id>") from None


def served(url_variable: str) -> tuple[FastAPI, Database]:
    """An app answering `/healthz`, and a database at the URL in `url_variable`, pooled as
    `BENCH_BARE_POOL` says and disposed of when the app stops."""
    size, overflow = (int(n) for n in os.environ[POOL].split(","))
    database = Database(make_url(os.environ[url_variable]), pool_size=size, max_overflow=overflow)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await database.dispose()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app, database


def create_app() -> FastAPI:
    app, database = served(DATABASE_URL)
    sessions = async_sessionmaker(database.engine, expire_on_commit=False)

    @app.get("/api/quotes")
    async def list_quotes(request: Request) -> dict[str, Any]:
        tenant, user = caller(request)
        async with sessions() as session, session.begin():
            quotes = QuoteService(session)
            found = await quotes.listing(tenant, party=Party(user, buyer=True, seller=False))
            return {"items": [quote_json(q) for q in found]}

    @app.post("/api/quotes", status_code=201)
    async def create_quote(request: Request, new: QuoteIn) -> dict[str, Any]:
        tenant, user = caller(request)
        async with sessions() as session, session.begin():
            quotes = QuoteService(session)
            quote = await quotes.create(
                tenant_id=tenant,
                buyer_id=user,
                title=new.title,
                description=new.description,
                currency=new.currency,
                sensitivity=new.sensitivity,
                items=[LineItem(i.description, i.quantity, i.unit_price_minor) for i in new.items],
                seller_id=new.seller_id,
            )
            current = await quotes.read(tenant, quote.id)
            if current is None:  # written in this same transaction
                raise HTTPException(500, "the new quote is gone")
            return quote_json(current)

    return app
