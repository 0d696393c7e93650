"""Every route declares its authorization: a Cedar action, or why it needs none."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.policy.engine import RuntimeAction
from ramparts.quotes.actions import QuoteAction
from ramparts.routes import ACTION_KEY, Exempt
from ramparts.web.app import create_app
from ramparts.web.metrics import METRICS_PATH
from tests.identity.helpers import bearer, obtain_tokens, provision
from tests.live import temporary_kms

SELF_SERVICE = ("/api/me/", "/oauth/userinfo")


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every endpoint, through included routers (FastAPI wraps them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


@pytest.mark.anyio
async def test_every_route_declares_its_action(urls: DatabaseUrls, tmp_path: Path) -> None:
    database = Database(urls.app, pool_size=1)
    settings = Settings(home="/nonexistent", secret_key=secrets.token_urlsafe(32))  # type: ignore[arg-type]
    app = create_app(settings, database, temporary_kms(tmp_path))
    await database.dispose()
    routes = list(api_routes(app.routes))
    assert len(routes) > 20
    actions = {str(a) for a in (*RuntimeAction.ALL, *QuoteAction.ALL)}
    for route in routes:
        declared = (route.openapi_extra or {}).get(ACTION_KEY)
        assert declared in actions | {e.value for e in Exempt}, f"{route.path} declares nothing"
        if declared == Exempt.SELF:
            assert route.path.startswith(SELF_SERVICE), route.path
        if declared == Exempt.SCRAPE:  # no user token opens it: for /metrics alone
            assert route.path == METRICS_PATH, route.path
        if route.path.startswith("/api/") and not route.path.startswith("/api/me/"):
            assert declared in actions, f"{route.path} must be authorized by Cedar"
    # The schema in /openapi.json carries the declarations for reviewers.
    operation = app.openapi()["paths"]["/api/quotes/{quote_id}"]["get"]
    assert operation[ACTION_KEY] == "Quotes::quote.read"


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_a_405_lists_every_method_of_the_path(serve_app: Callable[..., httpx.Client]) -> None:
    """On every path, `Allow` names each method the path answers, and only those."""
    apps: list[FastAPI] = []
    client = serve_app(apps.append)
    paths = {
        re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path) for route in api_routes(apps[0].routes)
    }
    paths.add("/static/app.js")
    assert {"/api/quotes", "/api/quotes/bulk-delete", "/oauth/userinfo"} <= paths
    for path in sorted(paths):
        if path.startswith("/app/api/"):  # the pages' door to the API: the API answers 405s
            continue
        refused = [m for m in METHODS if client.request(m, path).status_code == 405]
        assert refused, f"{path} answers every method"
        response = client.request(refused[0], path)
        assert response.headers["content-type"] == "application/problem+json"
        allowed = response.headers["allow"].split(", ")
        assert sorted(set(METHODS) - set(refused)) == [m for m in allowed if m != "HEAD"], path
        assert ("HEAD" in allowed) == ("GET" in allowed), path
        assert all(client.request(m, path).status_code == 405 for m in refused), path


def test_head_answers_like_get_without_content(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """RFC 9110 9.3.2: wherever GET is allowed, HEAD is too, listed in `Allow`, with GET's
    status, headers and authorization, and no content."""
    apps: list[FastAPI] = []
    client = serve_app(apps.append)
    gets = {
        re.sub(r"\{[^}]+\}", str(uuid.uuid4()), route.path)
        for route in api_routes(apps[0].routes)
        if "GET" in route.methods
    }
    assert {"/", "/.well-known/openid-configuration", "/oauth/jwks", "/api/quotes"} <= gets
    token = obtain_tokens(client, provision(urls, kms))["access_token"]
    for path in sorted({*gets, "/static/app.js"}):
        for headers in ({}, bearer(token)):
            got, head = client.get(path, headers=headers), client.head(path, headers=headers)
            assert head.status_code == got.status_code != 405, path
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
            assert head.headers["content-security-policy"] == got.headers["content-security-policy"]
    for path in ("/", "/.well-known/openid-configuration", "/oauth/jwks"):
        assert client.head(path).headers["content-length"] == str(len(client.get(path).content))
    assert client.head("/api/quotes").status_code == 401  # the same authentication as GET
    assert client.head("/api/quotes", headers=bearer(token)).status_code == 200
    # Where GET is not allowed, neither is HEAD, and Allow says so.
    refused = client.head("/oauth/token")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert client.post("/api/quotes/bulk-delete").status_code != 405
    assert "HEAD" in client.delete("/oauth/jwks").headers["allow"].split(", ")
