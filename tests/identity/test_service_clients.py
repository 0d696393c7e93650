"""Service-to-service (ID-3): private_key_jwt clients, audience-bound client_credentials.

No `from __future__ import annotations`: FastAPI must resolve the probe route's signature.
"""

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI
from joserfc import jwk, jwt

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.auth import Principal
from ramparts.identity.services import TenantRecord
from ramparts.routes import Exempt, declares
from tests.audit.trail import head, recorded
from tests.conftest import cli_env, libpq
from tests.identity.helpers import OVERLAP, bearer, provisioning_for

BILLING = "https://billing.example/"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RAMPARTS = str(Path(sys.executable).with_name("ramparts"))


def whoami_route(app: FastAPI) -> None:
    """A protected route standing in for the API that service tokens are meant for."""
    bearer_auth = app.state.identity.bearer

    async def whoami(principal: Annotated[Principal, Depends(bearer_auth)]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "tenant": str(principal.tenant_id),
            "user": principal.user_id,
            "roles": list(principal.roles),
        }

    # The permission gate lets a public route through; the route's own dependency then
    # authenticates, which is what the tests here are about.
    app.add_api_route("/probe/whoami", whoami, openapi_extra=declares(Exempt.PUBLIC))


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app(whoami_route)


def register(
    urls: DatabaseUrls,
    kms: Kms,
    resources: list[str],
    roles: tuple[str, ...] = ("service",),
    **credential: Any,
) -> tuple[str, TenantRecord]:
    async def run() -> tuple[str, TenantRecord]:
        owner = Database(urls.owner, pool_size=1)
        try:
            provisioning = provisioning_for(owner, kms)
            slug = f"s-{secrets.token_hex(5)}"
            tenant = await provisioning.ensure_tenant(slug=slug, name=slug, region="us")
            await provisioning.ensure_signing_key(overlap=OVERLAP)
            client_id = await provisioning.create_service_client(
                tenant, name="billing-sync", resources=resources, roles=list(roles), **credential
            )
            return client_id, tenant
        finally:
            await owner.dispose()

    return asyncio.run(run())


@pytest.fixture
def client_key() -> jwk.ECKey:
    return jwk.ECKey.generate_key("P-256", parameters={"kid": "svc-1"}, private=True)


@pytest.fixture
def client(
    urls: DatabaseUrls, kms: Kms, server: httpx.Client, client_key: jwk.ECKey
) -> tuple[str, TenantRecord]:
    api = f"{str(server.base_url).rstrip('/')}/api"
    jwks = {"keys": [client_key.as_dict(private=False)]}
    return register(urls, kms, [api, BILLING], jwks=jwks)


def assertion(server: httpx.Client, client_id: str, key: jwk.ECKey, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{api(server)[:-4]}/oauth/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
        **claims,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, body, key)


def token_request(server: httpx.Client, signed: str, resource: str | None) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": signed,
    }
    if resource is not None:
        data["resource"] = resource
    return server.post("/oauth/token", data=data)


def api(server: httpx.Client) -> str:
    return f"{str(server.base_url).rstrip('/')}/api"


def test_private_key_jwt_client_gets_an_audience_bound_token(
    server: httpx.Client, client: tuple[str, TenantRecord], client_key: jwk.ECKey
) -> None:
    client_id, tenant = client
    response = token_request(server, assertion(server, client_id, client_key), api(server))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}  # no refresh token
    me = server.get("/probe/whoami", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "subject": client_id,
        "tenant": str(tenant.id),
        "user": None,
        "roles": ["service"],
    }
    assert server.get("/oauth/userinfo", headers=bearer(body["access_token"])).status_code == 403


def test_a_token_for_another_audience_is_refused_here(
    server: httpx.Client, client: tuple[str, TenantRecord], client_key: jwk.ECKey
) -> None:
    client_id, _ = client
    billing = token_request(server, assertion(server, client_id, client_key), BILLING).json()
    refused = server.get("/probe/whoami", headers=bearer(billing["access_token"]))
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"resource": "https://elsewhere.example/"}, "invalid_target"),
        ({"resource": None}, "invalid_target"),
        ({"aud": "https://evil.example/token"}, "invalid_client"),
        ({"iss": "svc.00000000000000000000000000000000.nobodynobodynobody"}, "invalid_client"),
        ({"sub": "someone-else"}, "invalid_client"),
        ({"exp": int(time.time()) + 3600}, "invalid_client"),
        ({"exp": int(time.time()) - 120}, "invalid_client"),
        ({"key": "other"}, "invalid_client"),
    ],
)
def test_bad_client_authentication_or_target(
    server: httpx.Client,
    client: tuple[str, TenantRecord],
    client_key: jwk.ECKey,
    change: dict[str, Any],
    error: str,
) -> None:
    client_id, _ = client
    change = dict(change)
    resource = change.pop("resource", api(server))
    key = (
        jwk.ECKey.generate_key("P-256", parameters={"kid": "svc-1"}, private=True)
        if change.pop("key", None)
        else client_key
    )
    response = token_request(server, assertion(server, client_id, key, **change), resource)
    assert response.status_code in {400, 401}
    assert response.json()["error"] == error


def test_an_assertion_is_accepted_once(
    server: httpx.Client,
    urls: DatabaseUrls,
    client: tuple[str, TenantRecord],
    client_key: jwk.ECKey,
) -> None:
    client_id, tenant = client
    signed = assertion(server, client_id, client_key)
    before = head(urls, tenant.id)
    assert token_request(server, signed, api(server)).status_code == 200
    replay = token_request(server, signed, api(server))
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    issued, replayed = recorded(urls, tenant.id, after=before)
    assert (issued["action"], issued["decision"]) == ("identity:token:issued", "allow")
    assert issued["details"]["audience"] == api(server)
    assert (replayed["action"], replayed["decision"]) == (
        "identity:client_assertion:replayed",
        "deny",
    )
    assert replayed["resource"]["id"] == client_id
    assert signed not in json.dumps(replayed)


def test_revoked_client_gets_nothing(
    server: httpx.Client,
    urls: DatabaseUrls,
    client: tuple[str, TenantRecord],
    client_key: jwk.ECKey,
) -> None:
    client_id, _ = client
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute(
            "UPDATE service_clients SET revoked_at = now() WHERE client_id = %s", (client_id,)
        )
    refused = token_request(server, assertion(server, client_id, client_key), api(server))
    assert refused.json()["error"] == "invalid_client"


def test_registration_refuses_private_keys(
    urls: DatabaseUrls, kms: Kms, client_key: jwk.ECKey
) -> None:
    with pytest.raises(ValueError, match="private key"):
        register(urls, kms, [BILLING], jwks={"keys": [client_key.as_dict(private=True)]})


def test_revoking_a_client_revokes_the_tokens_it_holds(
    server: httpx.Client,
    urls: DatabaseUrls,
    kms: Kms,
    client: tuple[str, TenantRecord],
    client_key: jwk.ECKey,
    tmp_path: Path,
) -> None:
    """`ramparts clients revoke`: the client's live tokens are refused on the next request,
    not after their 600 s, while other clients' tokens keep working."""
    client_id, tenant = client
    other_id, _ = register(
        urls, kms, [api(server)], jwks={"keys": [client_key.as_dict(private=False)]}
    )
    held = token_request(server, assertion(server, client_id, client_key), api(server)).json()
    other = token_request(server, assertion(server, other_id, client_key), api(server)).json()
    for token in (held, other):
        assert server.get("/probe/whoami", headers=bearer(token["access_token"])).status_code == 200
    env = cli_env(tmp_path / "home", RAMPARTS_DATABASE_URL=libpq(urls.owner))
    revoked = subprocess.run(
        [RAMPARTS, "clients", "revoke", "--tenant", tenant.slug, client_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert revoked.returncode == 0, revoked.stderr
    before = head(urls, tenant.id)
    refused = server.get("/probe/whoami", headers=bearer(held["access_token"]))
    assert refused.status_code == 401
    [rejected] = recorded(urls, tenant.id, after=before)
    assert rejected["action"] == "identity:token:rejected"
    assert rejected["details"]["reason"] == "revoked"
    assert server.get("/probe/whoami", headers=bearer(other["access_token"])).status_code == 200


def test_a_client_id_without_a_value_counts_as_omitted(
    server: httpx.Client, client: tuple[str, TenantRecord], client_key: jwk.ECKey
) -> None:
    """RFC 6749 3.1: `client_id=` is no client_id, not a client_id that fails to match."""
    client_id, _ = client
    data = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION,
        "client_assertion": assertion(server, client_id, client_key),
        "resource": api(server),
        "client_id": "",
    }
    answer = server.post("/oauth/token", data=data)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("repeated", ["resource", "client_assertion", "client_assertion_type"])
def test_a_repeated_parameter_is_refused_before_the_assertion_is_spent(
    server: httpx.Client, client: tuple[str, TenantRecord], client_key: jwk.ECKey, repeated: str
) -> None:
    client_id, _ = client
    signed = assertion(server, client_id, client_key)
    body = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION),
        ("client_assertion", signed),
        ("resource", api(server)),
    ]
    again = BILLING if repeated == "resource" else dict(body)[repeated]
    answer = server.post(
        "/oauth/token",
        content=urlencode([*body, (repeated, again)]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    # Refused before anything was checked or recorded: the same assertion still works once.
    assert token_request(server, signed, api(server)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "slug"),
    [
        ("POST", "/api/me/passkeys", "not-a-user"),
        ("POST", "/api/quotes", "forbidden"),
        ("PATCH", "/api/quotes/not-a-uuid", "forbidden"),
        ("PUT", "/api/assistant/dlp", "forbidden"),
    ],
)
def test_a_service_is_refused_before_its_input_is_read(
    server: httpx.Client,
    client: tuple[str, TenantRecord],
    client_key: jwk.ECKey,
    urls: DatabaseUrls,
    method: str,
    path: str,
    slug: str,
) -> None:
    """Routes for people answer a service 403, never a 422 that would teach it their input."""
    client_id, tenant = client
    token = token_request(server, assertion(server, client_id, client_key), api(server))
    trail = head(urls, tenant.id)
    response = server.request(
        method, path, json={"not_a_field": 1}, headers=bearer(token.json()["access_token"])
    )
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"urn:ramparts:problem:{slug}"
    [refusal] = [e for e in recorded(urls, tenant.id, after=trail) if e["decision"] == "deny"]
    assert refusal["actor"]["id"] == client_id
