"""GET /api/audit/events: a tenant's admins read their own tenant's trail, nobody else does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes.roles import BUYER
from tests.audit.trail import recorded
from tests.identity.helpers import Account, bearer, obtain_tokens, provision


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


def signed_in(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, role: str
) -> tuple[Account, dict[str, str]]:
    account = provision(urls, kms, roles=(role,))
    return account, bearer(obtain_tokens(server, account)["access_token"])


def events(server: httpx.Client, headers: dict[str, str], **query: Any) -> httpx.Response:
    return server.get("/api/audit/events", params=query, headers=headers)


def test_an_admin_reads_and_filters_their_tenants_trail(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    admin, headers = signed_in(server, urls, kms, ADMIN_ROLE)
    _, other_headers = signed_in(server, urls, kms, ADMIN_ROLE)

    everything = events(server, headers)
    assert everything.status_code == 200, everything.text
    items = everything.json()["items"]
    assert {e["tenant"] for e in items} == {str(admin.tenant_id)}
    actions = [e["action"] for e in items]
    assert actions[:3] == ["identity:user:set", "identity:login:succeeded", "identity:token:issued"]
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    assert all(len(e["hash"]) == 64 for e in items)

    tokens = events(server, headers, action="identity:token:*").json()["items"]
    assert [e["action"] for e in tokens] == ["identity:token:issued"]
    by_actor = events(server, headers, actor=str(admin.user_id), decision="allow").json()
    assert {e["actor"]["id"] for e in by_actor["items"]} == {str(admin.user_id)}
    assert events(server, headers, since="2999-01-01T00:00:00Z").json()["items"] == []
    page = events(server, headers, limit=1, after=1).json()
    assert [e["seq"] for e in page["items"]] == [2]
    assert page["next_after"] == 2

    # Another tenant's admin sees only theirs: none of the first admin's events.
    theirs = events(server, other_headers).json()["items"]
    assert theirs
    assert str(admin.tenant_id) not in {e["tenant"] for e in theirs}
    # Every read is itself on the record.
    reads = recorded(urls, admin.tenant_id, Action.AUDIT_EVENTS_READ)
    assert len(reads) == 5
    assert {r["decision"] for r in reads} == {"allow"}


def test_filters_beyond_what_the_trail_can_hold_are_refused_not_failed(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Found by the DAST: a sequence past PostgreSQL's bigint, or a number for a time (which
    pydantic reads as seconds since 1970), is a 422 problem, never a 500 or a silent filter."""
    _, headers = signed_in(server, urls, kms, ADMIN_ROLE)
    for query in ({"after": 2**63}, {"until": "0.5"}, {"since": "1700000000"}):
        refused = events(server, headers, **query)
        assert refused.status_code == 422, (query, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["loc"] == ["query", next(iter(query))]
    assert events(server, headers, after=2**63 - 1).json()["items"] == []
    assert events(server, headers, until="2999-01-01T00:00:00+00:00").status_code == 200


def test_a_non_admin_is_refused_and_the_attempt_recorded(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer, headers = signed_in(server, urls, kms, BUYER)
    refused = events(server, headers, action="identity:login:*")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    [attempt] = recorded(urls, buyer.tenant_id, Action.AUTHORIZATION_DECIDED)
    assert attempt["decision"] == "deny"
    assert attempt["actor"]["id"] == str(buyer.user_id)
    assert attempt["details"]["action"] == "audit.read"
    assert recorded(urls, buyer.tenant_id, Action.AUDIT_EVENTS_READ) == []
    assert server.get("/api/audit/events").status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        {"action": "identity"},
        {"action": "DROP TABLE"},
        {"limit": 0},
        {"limit": 501},
        {"after": -1},
        {"since": "yesterday"},
        {"since": "2026-01-01T00:00:00"},  # no UTC offset: ambiguous
        {"decision": "maybe"},
    ],
)
def test_bad_filters_are_precise_problems(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, query: dict[str, Any]
) -> None:
    _, headers = signed_in(server, urls, kms, ADMIN_ROLE)
    response = events(server, headers, **query)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
