"""One tenant transaction per authenticated request (`ramparts.db.request`), ended before the
response starts: a success is committed before the client hears of it, and anything else
leaves nothing behind."""

# No `from __future__ import annotations`: FastAPI reads the test routes' annotations, which
# name local aliases.

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.db.request import request_session
from ramparts.identity.auth import Principal
from ramparts.problems import Problem, ProblemType
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.roles import BUYER
from ramparts.quotes.services import LineItem, QuoteService
from ramparts.routes import declares
from tests.identity.helpers import bearer, obtain_tokens, provision

PROBLEM = "application/problem+json"


def routes_that_write_then(owner: str) -> Callable[[FastAPI], None]:
    """Test routes that create a quote in the request's transaction, then: lose the
    connection before the commit, answer a 409, or raise."""

    def add(app: FastAPI) -> None:
        Caller = Annotated[Principal, Depends(app.state.identity.bearer)]  # noqa: N806
        Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806
        creates = declares(QuoteAction.QUOTE_CREATE)

        async def write(principal: Principal, session: AsyncSession, title: str) -> None:
            assert principal.user_id is not None
            await QuoteService(session).create(
                tenant_id=principal.tenant_id,
                buyer_id=principal.user_id,
                title=title,
                currency="EUR",
                items=[LineItem("Chair", 1, 100)],
            )

        @app.post("/test/commit-fails/{title}", openapi_extra=creates)
        async def commit_fails(principal: Caller, session: Session, title: str) -> dict[str, Any]:
            await write(principal, session, title)
            backend = await session.scalar(text("SELECT pg_backend_pid()"))
            async with await psycopg.AsyncConnection.connect(owner, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            return {"title": title}

        @app.post("/test/refused/{title}", openapi_extra=creates)
        async def refused(principal: Caller, session: Session, title: str) -> None:
            await write(principal, session, title)
            raise Problem(409, ProblemType.WRONG_STATUS, "refused after writing")

        @app.post("/test/fails/{title}", openapi_extra=creates)
        async def fails(principal: Caller, session: Session, title: str) -> None:
            await write(principal, session, title)
            raise RuntimeError("failed after writing")

    return add


def saved(urls: DatabaseUrls, title: str) -> bool:
    with psycopg.connect(libpq(urls.owner)) as owner:
        row = owner.execute("SELECT count(*) FROM quotes WHERE title = %s", (title,)).fetchone()
    return row == (1,)


@pytest.fixture
def fresh(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    """A database of the test's own: it kills every connection of the runtime role."""
    return make_database()


@pytest.fixture
def signed_in(
    serve_app: Callable[..., httpx.Client], fresh: DatabaseUrls, kms: Kms
) -> tuple[httpx.Client, dict[str, str]]:
    server = serve_app(routes_that_write_then(libpq(fresh.owner)), database_urls=fresh)
    buyer = provision(fresh, kms, roles=(BUYER,))
    return server, bearer(obtain_tokens(server, buyer)["access_token"])


def test_a_success_is_answered_only_once_committed(
    signed_in: tuple[httpx.Client, dict[str, str]], fresh: DatabaseUrls
) -> None:
    server, headers = signed_in
    title = f"kept {uuid.uuid4()}"
    quote = {
        "title": title,
        "currency": "EUR",
        "items": [{"description": "Chair", "quantity": 1, "unit_price_minor": 100}],
    }
    assert server.post("/api/quotes", json=quote, headers=headers).status_code == 201
    assert saved(fresh, title)

    lost = f"lost {uuid.uuid4()}"
    response = server.post(f"/test/commit-fails/{lost}", headers=headers)
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("internal-error")
    assert lost not in response.text
    assert not saved(fresh, lost)
    assert server.get("/api/quotes", headers=headers).status_code == 200  # the pool recovered


@pytest.mark.parametrize(("route", "status"), [("refused", 409), ("fails", 500)])
def test_a_refusal_or_a_failure_leaves_nothing_behind(
    signed_in: tuple[httpx.Client, dict[str, str]], fresh: DatabaseUrls, route: str, status: int
) -> None:
    server, headers = signed_in
    title = f"{route} {uuid.uuid4()}"
    response = server.post(f"/test/{route}/{title}", headers=headers)
    assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM)
    assert not saved(fresh, title)


def test_requests_go_on_when_the_server_drops_the_pooled_connections(
    signed_in: tuple[httpx.Client, dict[str, str]], fresh: DatabaseUrls
) -> None:
    server, headers = signed_in
    assert server.get("/api/quotes", headers=headers).status_code == 200
    with psycopg.connect(libpq(fresh.owner), autocommit=True) as owner:
        killed = owner.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = 'ramparts_app' AND datname = current_database()"
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1
    response = server.get("/api/quotes", headers=headers)
    assert response.status_code == 200, response.text
