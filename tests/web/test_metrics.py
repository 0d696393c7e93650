"""`GET /metrics`: for the scraper's networks or its token only, and what it reports."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.policy.engine import RuntimeAction
from ramparts.web.metrics import ScrapeAccess
from tests.identity.helpers import bearer, obtain_tokens, provision

PROBLEM = "application/problem+json"
TOKEN = secrets.token_urlsafe(32)


def test_the_scraper_is_known_by_its_network_or_its_token() -> None:
    access = ScrapeAccess(("10.0.0.0/8", "fd00::/8"), SecretStr(TOKEN))
    assert access.allows("10.1.2.3", None)
    assert access.allows("::ffff:10.1.2.3", None)  # IPv4 over an IPv6 socket
    assert access.allows("fd00::7", None)
    assert not access.allows("192.168.1.5", None)
    assert not access.allows("127.0.0.1", None)
    assert not access.allows(None, None)
    assert not access.allows("unix-socket", None)
    assert access.allows("192.168.1.5", f"Bearer {TOKEN}")
    assert access.allows("192.168.1.5", f"bearer {TOKEN}")
    assert not access.allows("192.168.1.5", f"Bearer {TOKEN[:-1]}")
    assert not access.allows("192.168.1.5", f"Bearer {TOKEN}x")
    assert not access.allows("192.168.1.5", f"Basic {TOKEN}")
    assert not access.allows("192.168.1.5", "Bearer ")
    without_token = ScrapeAccess(("10.0.0.0/8",), None)
    assert not without_token.allows("192.168.1.5", "Bearer ")


def test_loopback_scrapes_by_default_and_sees_every_family(client: httpx.Client) -> None:
    scraped = client.get("/metrics", headers={"host": "10.0.0.7:9000"})  # by the pod's address
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    for name in (
        "ramparts_http_requests",
        "ramparts_http_request_duration_seconds",
        "ramparts_policy_denials",
        "ramparts_gate_refusals",
        "ramparts_alerts",
        "ramparts_approvals_pending",
        "ramparts_dlq_depth",
        "ramparts_killswitch_engaged",
        "ramparts_audit_append_lag_seconds",
        "ramparts_reconciliation_drift",
    ):
        assert name in families, name
    assert families["ramparts_operations_gauges_up"].samples[0].value == 1
    scopes = {s.labels["scope"] for s in families["ramparts_killswitch_engaged"].samples}
    assert scopes == {"global", "tenant", "tool"}


@pytest.fixture(scope="module")
def guarded(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    """A server whose scrapers live elsewhere: loopback is not among its networks."""
    return serve_module_app(metrics_networks=("10.0.0.0/8",), metrics_token=SecretStr(TOKEN))


@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {TOKEN[:-2]}", f"Basic {TOKEN}", "Bearer"]
)
def test_anyone_else_gets_a_401_problem(guarded: httpx.Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    refused = guarded.get("/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == PROBLEM
    assert refused.headers["www-authenticate"] == 'Bearer realm="ramparts-metrics"'
    assert refused.json()["detail"] == (
        "metrics are for the configured networks or the bearer of the metrics token"
    )
    assert "ramparts_" not in refused.text


def test_the_metrics_token_opens_it_and_a_users_token_does_not(
    guarded: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    assert guarded.get("/metrics", headers=bearer(TOKEN)).status_code == 200
    account = provision(urls, kms)
    user_token = obtain_tokens(guarded, account)["access_token"]
    assert guarded.get("/api/me/profile", headers=bearer(user_token)).status_code != 401
    assert guarded.get("/metrics", headers=bearer(user_token)).status_code == 401


def _sample(client: httpx.Client, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_cedar_denials_are_counted_by_action(
    client: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    headers = bearer(obtain_tokens(client, provision(urls, kms))["access_token"])  # a buyer
    action = RuntimeAction.AUDIT_READ.qualified
    denials = _sample(client, "ramparts_policy_denials_total", action=action)
    refusals = _sample(client, "ramparts_gate_refusals_total", reason="denied_outright")
    for _ in range(2):
        assert client.get("/api/audit/events", headers=headers).status_code == 403
    assert _sample(client, "ramparts_policy_denials_total", action=action) == denials + 2
    assert _sample(client, "ramparts_gate_refusals_total", reason="denied_outright") == (
        refusals + 2
    )
