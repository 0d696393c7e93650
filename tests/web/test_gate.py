"""Permission before validation (issue 12, finding 18): a caller who may not do what a route
does is refused with 403 whatever its request looks like, so a 422 never teaches it the
route's input; a caller who may gets the precise 422. Walks every route of the app."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from joserfc import jwk

from ramparts.apps import policy_engine, policy_fragments
from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.models import ADMIN_ROLE
from ramparts.policy.compose import composition
from ramparts.policy.engine import (
    SENSITIVITIES,
    Channel,
    PolicyAction,
    PolicyEngine,
    Subject,
    Target,
)
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.app import QUOTES
from ramparts.quotes.roles import BUYER, SELLER
from ramparts.quotes.roles import ROLES as QUOTE_ROLES
from ramparts.routes import ACTION_KEY, Exempt, people_only
from tests.audit.trail import head, recorded
from tests.identity.helpers import bearer, obtain_tokens, provision
from tests.identity.test_service_clients import api, assertion, register, token_request
from tests.test_routes import api_routes

PROBLEM = "application/problem+json"
ROLES: list[tuple[str, ...]] = [(), *((role,) for role in (*QUOTE_ROLES, ADMIN_ROLE))]
ENGINE = policy_engine([QUOTES])


@pytest.fixture(scope="module")
def served(serve_module_app: Callable[..., httpx.Client]) -> tuple[httpx.Client, FastAPI]:
    apps: list[FastAPI] = []
    # The scraper lives elsewhere: /metrics is no more open to this client than the API.
    return serve_module_app(apps.append, metrics_networks=("10.0.0.0/8",)), apps[0]


def declared(route: APIRoute) -> str:
    return str((route.openapi_extra or {}).get(ACTION_KEY))


def action_of(route: APIRoute) -> PolicyAction | None:
    """The policy action the route declares (None: it is exempt, or declares nothing)."""
    return ENGINE.action(declared(route))


def may(roles: tuple[str, ...], action: PolicyAction) -> bool:
    """What the policies say: may a person with `roles` do `action` to anything of its tenant
    (signed in with a password and TOTP, through the API)?"""
    subject = Subject(
        id=str(uuid.uuid4()),
        tenant="t",
        region="eu",
        roles=frozenset(roles),
        amr=frozenset({"pwd", "otp", "mfa"}),
    )
    return any(
        ENGINE.decide(subject, action, t, Channel.API).allowed for t in targets(subject, action)
    )


def targets(subject: Subject, action: PolicyAction) -> list[Target]:
    """Every kind of resource of the subject's tenant the action could name: of each
    sensitivity, and one where the subject is one of its parties (a quote the subject asked
    for, answers), or where it has none."""
    kind = action.entity_type
    if kind == "ModelEndpoint":
        return [Target(kind, "*", region="eu")]
    names = ENGINE.party_attributes(kind)
    parties = [(), *(((name, subject.id),) for name in names)]
    if len(names) > 1:  # another party set, the subject one of them
        parties += [((names[0], "other"), (name, subject.id)) for name in names[1:]]
    return [Target(kind, "*", "t", s, parties=p) for s in SENSITIVITIES for p in parties]


def invalid_request(route: APIRoute) -> tuple[str, dict[str, Any]]:
    """The route's URL and request options, with every path parameter, query parameter and
    body made invalid (each of them alone would answer 422)."""
    path = route.path
    for param in route.dependant.path_params:
        path = path.replace(f"{{{param.name}}}", "not-a-uuid")
    options: dict[str, Any] = {
        "params": {q.alias: "not valid!" for q in route.dependant.query_params}
    }
    if route.body_field is not None:
        options["json"] = {"not_a_field": ["x"]}
    return path, options


def is_invalid(route: APIRoute) -> bool:
    return bool(route.dependant.path_params or route.body_field or route.dependant.query_params)


def test_the_walk_covers_the_routes_with_input(served: tuple[httpx.Client, FastAPI]) -> None:
    _, app = served
    routes = [r for r in api_routes(app.routes) if action_of(r) is not None]
    with_body = {(r.path, m) for r in routes if r.body_field is not None for m in r.methods}
    assert {
        ("/api/quotes", "POST"),
        ("/api/quotes/{quote_id}", "PATCH"),
        ("/api/quotes/bulk-delete", "POST"),
        ("/api/assistant", "POST"),
        ("/api/assistant/killswitch", "POST"),
        ("/api/assistant/dlp", "PUT"),
    } <= with_body
    assert any(r.path == "/api/audit/events" for r in routes)
    assert not may((SELLER,), QuoteAction.QUOTE_CREATE)  # the finding's example


@pytest.mark.parametrize("roles", ROLES, ids=lambda r: "-".join(r) or "no-role")
def test_permission_is_decided_before_validation(
    served: tuple[httpx.Client, FastAPI],
    urls: DatabaseUrls,
    kms: Kms,
    roles: tuple[str, ...],
) -> None:
    client, app = served
    account = provision(urls, kms, roles=roles)
    headers = bearer(obtain_tokens(client, account)["access_token"])
    trail = head(urls, account.tenant_id)
    refused: list[str] = []
    for route in api_routes(app.routes):
        action = action_of(route)
        if action is None:
            continue
        path, options = invalid_request(route)
        for method in sorted(route.methods):
            response = client.request(method, path, headers=headers, **options)
            where = f"{method} {route.path} as {roles or 'no role'}"
            if may(roles, action):
                assert response.status_code != 403, where
                if is_invalid(route):
                    assert response.status_code == 422, where
            else:
                assert response.status_code == 403, f"{where}: {response.text}"
                assert response.headers["content-type"] == PROBLEM, where
                assert response.json()["type"] == "urn:ramparts:problem:forbidden", where
                assert "not_a_field" not in response.text
                refused.append(str(action))
    if not roles:
        assert len(refused) == sum(
            len(r.methods) for r in api_routes(app.routes) if action_of(r) is not None
        )
    # Every refusal is in the tenant's trail, as a denied decision on that action.
    denials = [
        d["details"]["action"]
        for d in recorded(urls, account.tenant_id, Action.AUTHORIZATION_DECIDED, after=trail)
        if d["decision"] == "deny"
    ]
    assert sorted(denials) == sorted(refused)


SERVICE_ROLES: list[tuple[str, ...]] = [
    ("service",),
    *((role,) for role in (*QUOTE_ROLES, ADMIN_ROLE)),
]


def service_may(roles: tuple[str, ...], route: APIRoute) -> bool:
    """What the declarations and policies say a service with `roles` may do on `route`: never
    a people-only route, else what Cedar allows it (the schema's `appliesTo` included)."""
    action = action_of(route)
    if people_only(route.openapi_extra) or action is None:
        return False
    subject = Subject(
        id="svc", tenant="t", region="eu", roles=frozenset(roles), amr=frozenset(), service=True
    )
    return any(
        ENGINE.decide(subject, action, t, Channel.SERVICE).allowed for t in targets(subject, action)
    )


@pytest.mark.parametrize("roles", SERVICE_ROLES, ids="-".join)
def test_a_service_is_refused_before_validation_on_every_route_it_may_not_use(
    served: tuple[httpx.Client, FastAPI], urls: DatabaseUrls, kms: Kms, roles: tuple[str, ...]
) -> None:
    """The same walk with a service token: a route no service may use (its action's schema
    names no Service, or it serves people only) answers 403 whatever the body."""
    client, app = served
    key = jwk.ECKey.generate_key("P-256", parameters={"kid": "svc-1"}, private=True)
    jwks = {"keys": [key.as_dict(private=False)]}
    client_id, tenant = register(urls, kms, [api(client)], roles, jwks=jwks)
    issued = token_request(client, assertion(client, client_id, key), api(client))
    headers = bearer(issued.json()["access_token"])
    trail = head(urls, tenant.id)
    refused = 0
    for route in api_routes(app.routes):
        if declared(route) in (Exempt.PUBLIC, Exempt.PAGE):  # a page signs in by its cookie
            continue
        if declared(route) == Exempt.SCRAPE:  # the metrics token opens it, no role does
            assert client.get(route.path, headers=headers).status_code == 401
            continue
        path, options = invalid_request(route)
        for method in sorted(route.methods):
            response = client.request(method, path, headers=headers, **options)
            where = f"{method} {route.path} as a service with {roles}"
            if service_may(roles, route):
                assert response.status_code != 403, where
                if is_invalid(route):
                    assert response.status_code == 422, where
                continue
            assert response.status_code == 403, f"{where}: {response.text}"
            assert response.headers["content-type"] == PROBLEM, where
            slug = "not-a-user" if people_only(route.openapi_extra) else "forbidden"
            assert response.json()["type"] == f"urn:ramparts:problem:{slug}", where
            assert "not_a_field" not in response.text
            refused += 1
    assert refused
    denials = [e for e in recorded(urls, tenant.id, after=trail) if e["decision"] == "deny"]
    assert len(denials) == refused
    assert {e["actor"]["id"] for e in denials} == {client_id}


def test_the_assistant_refuses_a_service_whatever_its_body(
    served: tuple[httpx.Client, FastAPI], urls: DatabaseUrls, kms: Kms
) -> None:
    """The finding's example: a service allowed to call models (role buyer) asks the assistant,
    which serves people: the same 403 for a valid and an invalid body."""
    client, _ = served
    key = jwk.ECKey.generate_key("P-256", parameters={"kid": "svc-1"}, private=True)
    client_id, _ = register(
        urls, kms, [api(client)], ("buyer",), jwks={"keys": [key.as_dict(private=False)]}
    )
    issued = token_request(client, assertion(client, client_id, key), api(client))
    headers = bearer(issued.json()["access_token"])
    for body in ({"zzz": 1}, {"message": "hi"}):
        response = client.post("/api/assistant", json=body, headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["type"] == "urn:ramparts:problem:not-a-user"
        assert "message" not in response.text


def test_authentication_comes_before_validation(served: tuple[httpx.Client, FastAPI]) -> None:
    client, app = served
    for route in api_routes(app.routes):
        if declared(route) in (Exempt.PUBLIC, Exempt.PAGE):  # a page signs in by its cookie
            continue
        path, options = invalid_request(route)
        for method in route.methods:
            response = client.request(method, path, **options)
            assert response.status_code == 401, f"{method} {route.path}: {response.text}"
            assert response.headers["content-type"] == PROBLEM


def test_a_route_that_declares_nothing_is_refused(
    serve_app: Callable[..., httpx.Client],
) -> None:
    def undeclared(app: FastAPI) -> None:
        async def open_door(body: dict[str, int]) -> dict[str, str]:
            return {"status": "open"}

        app.add_api_route("/probe/undeclared", open_door, methods=["POST"])

    client = serve_app(undeclared)
    response = client.post("/probe/undeclared", json={"x": "not an int"})
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "this route declares no authorization"


def test_only_what_no_resource_could_allow_is_refused_early() -> None:
    """A permit that depends on the resource (here its sensitivity and tenant, as an owner
    rule would) never makes the gate refuse: the resource is unknown to it."""
    schema = composition(policy_fragments([QUOTES])).schema
    engine = PolicyEngine(
        '@id("confidential-updates")\n'
        'permit (principal in Role::"buyer", action == Quotes::Action::"quote.update", resource)\n'
        'when { resource.tenant == principal.tenant && resource.sensitivity == "confidential" };',
        schema,
    )

    def person(role: str) -> Subject:
        return Subject(id=str(uuid.uuid4()), tenant="t", region="eu", roles=frozenset({role}))

    buyer, seller = person(BUYER), person(SELLER)
    update = QuoteAction.QUOTE_UPDATE
    quote = update.entity_type
    assert not engine.refuses_outright(buyer, update, "confidential", Channel.API)
    assert engine.decide(
        buyer, update, Target(quote, "q", "t", "confidential"), Channel.API
    ).allowed
    assert not engine.decide(
        buyer, update, Target(quote, "q", "t", "internal"), Channel.API
    ).allowed
    assert engine.refuses_outright(seller, update, "confidential", Channel.API)
    assert engine.refuses_outright(buyer, QuoteAction.QUOTE_CREATE, "confidential", Channel.API)
    service = Subject(id="svc", tenant="t", region="eu", roles=frozenset({"buyer"}), service=True)
    assert engine.refuses_outright(service, update, "confidential", Channel.SERVICE)  # people only
