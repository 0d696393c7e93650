"""ID-3, service-to-service: the check registers a service client of its own, as the operator
does (the owner's database: `ramparts clients create` would also need the instance's KMS for
its audit key, which a drill does not hold), uses it the way docs/service-clients.md says,
tries what a shared-secret client would, and revokes it.

A certificate-bound token (RFC 8705) needs a TLS handshake with a client certificate: it is
proved on a second `ramparts serve` of the instance that terminates mTLS (`bound_tokens`).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from ramparts.audit.events import Action
from ramparts.identity.clients import ASSERTION_TYPE, new_client_id
from ramparts.identity.models import ADMIN_ROLE
from ramparts.tabletop.conformance.bound_tokens import prove_binding
from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.forgery import DrillKey, read_jwt
from ramparts.tabletop.conformance.people import admin_of, first_of_each_role_set, tenant_id
from ramparts.tabletop.conformance.reads import list_routes
from ramparts.tabletop.conformance.signin import discovery
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import DrillError, Target

__all__ = ["check"]

#: The audit actions of a service client's refused authentication.
REFUSALS = {Action.CLIENT_AUTHENTICATION_FAILED.value, Action.CLIENT_ASSERTION_REPLAYED.value}
#: The OAuth client authentication methods that rest on a shared secret (RFC 7591 names).
SHARED_SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")


class _Service:
    """The drill's service client: its key, and the token requests it makes."""

    def __init__(self, target: Target, token_endpoint: str, client_id: str) -> None:
        self.key = DrillKey("drill-service")
        self.client_id = client_id
        self._endpoint = token_endpoint  # an assertion's audience: the endpoint exactly
        self.path = urlsplit(token_endpoint).path
        self.http = target.client()

    def assertion(self, key: DrillKey | None = None) -> str:
        """RFC 7523: iss = sub = the client, aud = the token endpoint, short-lived, one jti."""
        moment = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self._endpoint,
            "iat": moment,
            "exp": moment + 60,
            "jti": secrets.token_urlsafe(16),
        }
        signer = key or self.key
        return signer.es256({"kid": self.key.kid, "typ": "JWT"}, claims)

    def token(self, resource: str | None, assertion: str | None = None) -> httpx.Response:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
        }
        if resource is not None:
            data["resource"] = resource
        return self.http.post(self.path, data=data)

    def call(self, route: str, token: str) -> int:
        return self.http.get(route, headers={"Authorization": f"Bearer {token}"}).status_code


def _error(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error"))
    except ValueError:
        return "(no JSON)"


def check(target: Target) -> Outcome:
    f = Findings(
        "a service client authenticates with private_key_jwt or mTLS (no shared secret offered, "
        "storable or accepted); an mTLS client's token is bound to its certificate; its "
        "token names one audience (RFC 8707) and a token for another audience is refused by "
        "the API; the client belongs to one tenant and revoking it refuses its tokens at once"
    )
    meta = discovery(target)
    tenant = target.tenants()[0]
    tenant_uuid = tenant_id(target, tenant)
    api = str(read_jwt(target.session(admin_of(target, tenant)).access_token)[1]["aud"])
    other = f"urn:ramparts:drill:other-service:{secrets.token_hex(4)}"
    roles = next(
        sorted(r) for _, r in first_of_each_role_set(target, tenant) if ADMIN_ROLE not in r
    )
    service = _Service(target, str(meta["token_endpoint"]), new_client_id(uuid.UUID(tenant_uuid)))
    started = now()
    _register(target, tenant_uuid, service, [api, other], roles)
    f.saw(f"registered {service.client_id} in {tenant} (private_key_jwt, roles {roles})")
    try:
        route = _audiences(f, target, service, api=api, other=other, tenant=tenant_uuid)
        _no_shared_secrets(f, service, api)
        _revocation(f, target, service, api=api, route=route, tenant=tenant_uuid)
    finally:
        _revoke(target, tenant_uuid, service.client_id)
        service.http.close()
    refusals = [
        e
        for e in audit_events(
            target.session(admin_of(target, tenant)), since=started, action="identity:*"
        )
        if e.get("action") in REFUSALS
    ]
    if f.expect(bool(refusals), f"{len(refusals)} refusal(s) audited", "refusals not audited"):
        f.evidence += cited(refusals)
    _methods(f, target, meta, tenant_uuid)
    if not target.environment:
        f.unproven("certificate-bound tokens (no second TLS server without the operator)")
    else:
        with f.part("the certificate-bound token"):
            _bound(f, target, tenant_uuid, roles, api=api, route=route)
    return f.outcome(
        "private_key_jwt tokens for one audience; another audience's token refused by the API "
        "(401); no client_secret method offered or storable; client secrets, replayed and "
        "foreign-key assertions refused; revocation refused the client's token at once; an "
        "mTLS client's token bound to its certificate (cnf.x5t#S256), refused without it"
    )


def _methods(f: Findings, target: Target, meta: dict[str, Any], tenant: str) -> None:
    """Discovery offers no shared-secret client authentication, and the database cannot hold
    a service client that would use one (its CHECK refuses the method)."""
    offered = list(meta.get("token_endpoint_auth_methods_supported") or [])
    shared = [m for m in offered if m.startswith("client_secret")]
    f.expect(
        "private_key_jwt" in offered and not shared,
        f"discovery: token_endpoint_auth_methods_supported {offered}",
        f"discovery offers shared-secret client authentication: {shared or offered}",
    )
    refused: dict[str, str] = {}
    with target.owner() as db, rolled_back(db):
        as_tenant(db, tenant)
        for method in SHARED_SECRET_METHODS:
            try:
                with db.transaction():
                    db.execute(
                        "INSERT INTO service_clients (tenant_id, client_id, name, auth_method, "
                        "jwks, certificate_thumbprint, resources) VALUES (%s, %s, 'drill', %s, "
                        "'{}'::jsonb, 'x', ARRAY['urn:drill'])",
                        (tenant, new_client_id(uuid.UUID(tenant)), method),
                    )
                refused[method] = "stored"
            except psycopg.errors.CheckViolation:
                refused[method] = "refused by its CHECK"
        columns = [
            str(c)
            for (c,) in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'service_clients'"
            )
        ]
    secret_columns = [c for c in columns if "secret" in c]
    f.expect(
        all(how != "stored" for how in refused.values()) and not secret_columns,
        "the owner storing a service client with "
        + ", ".join(f"{m}: {how}" for m, how in refused.items())
        + f" (rolled back); service_clients has no secret column ({len(columns)} columns)",
        f"a service client with a shared secret can be stored: {refused}, {secret_columns}",
    )


def _bound(
    f: Findings, target: Target, tenant: str, roles: list[str], *, api: str, route: str
) -> None:
    registered: list[str] = []

    def register(thumbprint: str) -> str:
        client_id = new_client_id(uuid.UUID(tenant))
        with target.owner() as db, db.transaction():
            as_tenant(db, tenant)
            db.execute(
                "INSERT INTO service_clients (tenant_id, client_id, name, auth_method, "
                "certificate_thumbprint, resources, roles) VALUES (%s, %s, "
                "'conformance drill mTLS', 'tls_client_auth', %s, %s, %s)",
                (tenant, client_id, thumbprint, [api], roles),
            )
        registered.append(client_id)
        return client_id

    try:
        prove_binding(f, target, register=register, api=api, route=route)
    finally:
        for client_id in registered:
            _revoke(target, tenant, client_id)


def _register(
    target: Target, tenant: str, service: _Service, resources: list[str], roles: list[str]
) -> None:
    with target.owner() as db, db.transaction():
        as_tenant(db, tenant)
        db.execute(
            "INSERT INTO service_clients (tenant_id, client_id, name, auth_method, jwks, "
            "resources, roles) VALUES (%s, %s, 'conformance drill', 'private_key_jwt', "
            "%s::jsonb, %s, %s)",
            (tenant, service.client_id, json.dumps({"keys": [service.key.jwk]}), resources, roles),
        )


def _revoke(target: Target, tenant: str, client_id: str) -> int:
    with target.owner() as db, db.transaction():
        as_tenant(db, tenant)
        return len(
            db.execute(
                "UPDATE service_clients SET revoked_at = now() WHERE tenant_id = %s "
                "AND client_id = %s AND revoked_at IS NULL RETURNING 1",
                (tenant, client_id),
            ).fetchall()
        )


def _audiences(
    f: Findings, target: Target, service: _Service, *, api: str, other: str, tenant: str
) -> str:
    """Tokens for the API and for another audience; returns the route that showed them."""
    for_other = service.token(other)
    for_api = service.token(api)
    if for_other.status_code != 200 or for_api.status_code != 200:
        raise DrillError(
            f"the service's tokens were refused ({for_other.status_code}, "
            f"{for_api.status_code}: {_error(for_api)})"
        )
    token = str(for_api.json()["access_token"])
    _, claims = read_jwt(token)
    f.expect(
        claims.get("aud") == api
        and claims.get("sub") == service.client_id
        and claims.get("tenant") == tenant
        and "refresh_token" not in for_api.json(),
        f"API token: aud {claims.get('aud')}, sub = the client, tenant {claims.get('tenant')}, "
        f"expires_in {for_api.json().get('expires_in')}, no refresh token",
        "the service's token is not bound to its audience, client and tenant",
    )
    answers = {listing.path: service.call(listing.path, token) for listing in list_routes(target)}
    accepted = [path for path, status in answers.items() if status == 200] or [
        path for path, status in answers.items() if status != 401
    ]
    if not accepted:
        raise DrillError("no API route accepts the service's own API token")
    route = accepted[0]
    how = "accepted" if answers[route] == 200 else "authenticated; policy answers it"
    f.saw(f"GET {route} with the API token → {answers[route]} ({how})")
    foreign = str(for_other.json()["access_token"])
    let_in = [path for path in answers if service.call(path, foreign) != 401]
    f.expect(
        not let_in,
        f"the token for {other} → 401 on each of {len(answers)} API list routes",
        f"a token for another audience was accepted by the API at {', '.join(let_in)}",
    )
    unknown = service.token("https://unregistered.example/api")
    missing = service.token(None)
    f.expect(
        unknown.status_code == 400 and missing.status_code == 400,
        f"a resource not registered → {unknown.status_code} {_error(unknown)}; no resource → "
        f"{missing.status_code} {_error(missing)}",
        "a token was issued for an audience the client may not name, or for none",
    )
    return route


def _no_shared_secrets(f: Findings, service: _Service, api: str) -> None:
    path = service.path
    secret = secrets.token_urlsafe(24)
    post = service.http.post(
        path,
        data={
            "grant_type": "client_credentials",
            "client_id": service.client_id,
            "client_secret": secret,
            "resource": api,
        },
    )
    basic = service.http.post(
        path,
        data={"grant_type": "client_credentials", "resource": api},
        auth=(service.client_id, secret),
    )
    f.expect(
        post.status_code == 401 and basic.status_code == 401,
        f"client_secret_post → {post.status_code} {_error(post)}; client_secret_basic → "
        f"{basic.status_code}",
        "a shared client secret was accepted",
    )
    assertion = service.assertion()
    first, replayed = service.token(api, assertion), service.token(api, assertion)
    foreign = service.token(api, service.assertion(DrillKey("drill-foreign")))
    f.expect(
        first.status_code == 200 and replayed.status_code == 401 and foreign.status_code == 401,
        f"an assertion used twice → {first.status_code} then {replayed.status_code}; signed by "
        f"another key under the client's kid → {foreign.status_code}",
        "a replayed or foreign-signed assertion was accepted",
    )


def _revocation(
    f: Findings, target: Target, service: _Service, *, api: str, route: str, tenant: str
) -> None:
    token = str(service.token(api).json()["access_token"])
    before = service.call(route, token)
    revoked = _revoke(target, tenant, service.client_id)
    after = service.call(route, token)
    again = service.token(api)
    f.expect(
        revoked == 1 and before != 401 and after == 401 and again.status_code == 401,
        f"revoked ({revoked} row): its live token {before} → {after}; a new token request → "
        f"{again.status_code} {_error(again)}",
        "revoking the client did not refuse it at once",
    )
