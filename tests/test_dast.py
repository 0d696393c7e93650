"""DAST (PLT-2): schemathesis against /openapi.json of a running `ramparts serve`, once without
a token and once with a real token for each demo role, on a throwaway database.

Every run must find nothing: no 5xx, no answer outside the document (status, media type,
body, headers), no route reachable without a token unless declared public, every refusal
problem+json. A route planted in a running app that fails (a 500) or answers outside its
schema makes the run fail, naming the operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from ramparts.db.engine import DatabaseUrls
from ramparts.routes import Exempt, declares
from ramparts.web.openapi import BEARER_SCHEME
from tests.conftest import free_port
from tests.dast import DastRun, run_dast
from tests.identity.helpers import sign_in_demo_user
from tests.test_cli import owner_env, run, running

#: Each role of the demo data, by the acme user who holds it.
ROLES = {
    "buyer": "buyer@acme.test",
    "seller": "seller@acme.test",
    "finance": "finance@acme.test",
    "admin": "admin@acme.test",
}


@pytest.fixture(scope="module")
def instance(
    tmp_path_factory: pytest.TempPathFactory, make_database: Callable[..., DatabaseUrls]
) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `ramparts serve` on a fresh, seeded database; its URL and a token per role."""
    home = tmp_path_factory.mktemp("dast-home")
    urls = make_database(migrate=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The scraper's network is elsewhere, as in a deployment: the DAST then sees /metrics as
    # any other caller does (401 without the metrics token).
    env = owner_env(
        home, urls, RAMPARTS_PUBLIC_URL=base, RAMPARTS_METRICS_NETWORKS="10.255.255.255/32"
    )
    assert run("migrate", env=env).returncode == 0
    seeded = run("seed-demo", "--json", env=env)
    assert seeded.returncode == 0, seeded.stderr
    report = json.loads(seeded.stdout)
    with running("serve", "--port", str(port), env=env, url=f"{base}/readyz"):
        tokens = {}
        for role, username in ROLES.items():
            with httpx.Client(base_url=base) as browser:
                answer = sign_in_demo_user(browser, report, username)
            assert answer.status_code == 200, answer.text
            tokens[role] = answer.json()["access_token"]
        yield base, tokens


def _clean(result: DastRun) -> None:
    assert result.operations >= 50, result.output[-3000:]
    assert result.findings == (), "\n".join(f"{f.operation}: {f.message}" for f in result.findings)
    assert result.returncode == 0, result.output[-3000:]


@pytest.mark.parametrize("role", [None, *ROLES])
def test_dast_finds_nothing(
    role: str | None, instance: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, tokens = instance
    result = run_dast(
        base,
        role=role or "anonymous",
        token=None if role is None else tokens[role],
        report_dir=tmp_path,
    )
    _clean(result)


class Count(BaseModel):
    count: int


PLANTED = "^/planted/"


def _plant(app: FastAPI) -> None:
    """Broken routes mounted only here: one fails, one answers off its schema, one refuses in
    plain text, and one answers without a token though the document says it needs one."""
    router = APIRouter()
    public = declares(Exempt.PUBLIC)

    @router.get("/planted/crash", response_model=Count, openapi_extra=public)
    async def crash() -> Count:
        raise RuntimeError("planted failure")

    @router.get("/planted/off-schema", response_model=Count, openapi_extra=public)
    async def off_schema() -> JSONResponse:
        return JSONResponse({"count": "many"})

    @router.get("/planted/plain-refusal", response_model=Count, openapi_extra=public)
    async def plain_refusal() -> PlainTextResponse:
        return PlainTextResponse("no", status_code=400)

    @router.get("/planted/open-door", response_model=Count, openapi_extra=public)
    async def open_door() -> Count:
        return Count(count=1)

    app.include_router(router)
    documented = app.openapi

    def with_a_door_documented_shut() -> dict[str, Any]:
        document = documented()
        document["paths"]["/planted/open-door"]["get"]["security"] = [{BEARER_SCHEME: []}]
        return document

    app.openapi = with_a_door_documented_shut  # type: ignore[method-assign]


def test_dast_fails_on_planted_routes_naming_each_operation_and_check(
    serve_app: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    client = serve_app(_plant)
    result = run_dast(
        str(client.base_url), role="anonymous", token=None, report_dir=tmp_path, paths=PLANTED
    )
    assert result.returncode != 0
    assert result.operations == 4
    failed = {f.operation: f.summary for f in result.findings}
    assert set(failed) == {
        "GET /planted/crash",
        "GET /planted/off-schema",
        "GET /planted/plain-refusal",
        "GET /planted/open-door",
    }
    assert "Server error" in failed["GET /planted/crash"]
    assert "Response violates schema" in failed["GET /planted/off-schema"]
    assert "refusals_are_problems" in failed["GET /planted/plain-refusal"]
    assert "no_token_no_entry" in failed["GET /planted/open-door"]
    assert "GET /planted/crash" in result.output
