"""The OpenAPI document documents, for every route, the refusals its class can give."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from ramparts.config import Settings
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.problems import PROBLEM_JSON
from ramparts.routes import ACTION_KEY, Exempt
from ramparts.web.app import create_app
from ramparts.web.openapi import BEARER_SCHEME, PROBLEM_SCHEMA
from tests.live import temporary_kms

PROBLEM_REF = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}


@pytest.fixture
async def document(urls: DatabaseUrls, tmp_path: Path) -> dict[str, Any]:
    database = Database(urls.app, pool_size=1)
    settings = Settings(home="/nonexistent", secret_key=secrets.token_urlsafe(32))  # type: ignore[arg-type]
    app = create_app(settings, database, temporary_kms(tmp_path))
    await database.dispose()
    openapi: dict[str, Any] = app.openapi()
    return openapi


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.mark.anyio
async def test_every_operation_documents_its_refusals_and_its_scheme(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"] == {
        BEARER_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    # FastAPI's own validation error shape is never answered (422 is a problem).
    assert "HTTPValidationError" not in document["components"]["schemas"]
    operations = _operations(document)
    assert len(operations) > 50
    for method, path, operation in operations:
        name = f"{method.upper()} {path}"
        responses = operation["responses"]
        public = operation[ACTION_KEY] == Exempt.PUBLIC
        assert operation["security"] == ([] if public else [{BEARER_SCHEME: []}]), name
        assert ("401" in responses) is not public or path in ("/oauth/token", "/oauth/revoke")
        assert {"400", "403", "413", "414", "422", "429", "431"} <= set(responses), name
        if method in ("post", "put", "patch"):
            assert "415" in responses, name
        if not public:
            assert {"404"} <= set(responses), name
            assert responses["401"]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}
        if not public and method in ("post", "put", "patch", "delete"):
            assert "409" in responses, name
        assert responses["422"]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, name
        for status, response in responses.items():
            if int(status) >= 400:
                assert response.get("content"), f"{name} {status} documents no body"


@pytest.mark.anyio
async def test_a_routes_own_responses_are_kept_and_pages_refuse_with_pages(
    document: dict[str, Any],
) -> None:
    paths = document["paths"]
    # The token endpoint refuses in RFC 6749's words; the edge's refusals stay problems.
    token = paths["/oauth/token"]["post"]["responses"]
    assert set(token["400"]["content"]) == {"application/json"}
    assert token["400"]["content"]["application/json"]["schema"]["required"] == ["error"]
    assert set(token["413"]["content"]) == {PROBLEM_JSON}
    # A deposit's own 409 keeps its description and gains the problem body.
    deposit = paths["/api/quotes/{quote_id}/deposit"]["post"]["responses"]["409"]
    assert deposit["description"] != "Conflict"
    assert deposit["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}
    # A sign-in page: its own refusals are pages, validation's a problem; it may redirect.
    login = paths["/login"]["post"]["responses"]
    assert set(login["200"]["content"]) == {"text/html"}
    assert set(login["400"]["content"]) == {"text/html", PROBLEM_JSON}
    assert set(login["422"]["content"]) == {PROBLEM_JSON}
    assert "303" in login
    # Both methods the OIDC specifications give userinfo and logout are documented.
    assert set(paths["/oauth/userinfo"]) == {"get", "post"}
    assert set(paths["/oauth/logout"]) == {"get", "post"}
