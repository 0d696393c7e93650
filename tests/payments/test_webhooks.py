"""`POST /webhooks/psp` on a live server, with real PostgreSQL and stripe-python's signatures."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
import stripe
from pydantic import SecretStr

from ramparts.config import APP_ROLE
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.payments.tenancy import tenant_metadata
from ramparts.payments.webhook_secrets import REFRESH_SECONDS, WebhookSecrets
from ramparts.web.cards import holds_card_number

PROBLEM = "urn:ramparts:problem:"
SECRET = "whsec_" + secrets.token_urlsafe(24)


def make_tenant(urls: DatabaseUrls) -> uuid.UUID:
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Webhooks', 'eu')",
            (tenant, f"wh-{tenant.hex[:12]}"),
        )
    return tenant


def stored(urls: DatabaseUrls, event_id: str) -> list[tuple[Any, ...]]:
    """The rows of `event_id`, whatever their tenant (read as the owner)."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        return conn.execute(
            "SELECT tenant_id, event_type, object_id, state, payload, signed_at "
            "FROM psp_events WHERE event_id = %s",
            (event_id,),
        ).fetchall()


def event(
    tenant: uuid.UUID | None,
    *,
    event_type: str = "payment_intent.succeeded",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Stripe event about a PaymentIntent the runtime made for `tenant`."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {
            "object": {
                "id": "pi_" + secrets.token_hex(12),
                "object": "payment_intent",
                "amount": 5000,
                "currency": "eur",
                "status": "succeeded",
                "metadata": metadata
                if metadata is not None
                else (tenant_metadata(tenant) if tenant else {}),
            }
        },
    }


def signed(
    document: dict[str, Any] | bytes,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers the PSP sends, signed by stripe-python's `WebhookSignature`."""
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(kms: Kms, serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    # The secrets are in place before the server reads them (its first delivery).
    WebhookSecrets(kms).rotate(SecretStr(SECRET), overlap_seconds=0)
    return serve_module_app()


@pytest.fixture(scope="module")
def tenant(urls: DatabaseUrls) -> uuid.UUID:
    return make_tenant(urls)


def post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/webhooks/psp", content=body, headers=headers)


def refused(response: httpx.Response, slug: str, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM + slug
    return str(problem.get("detail", ""))


def test_a_signed_event_is_stored_once_in_its_tenant(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    document = event(tenant)
    response = post(client, *signed(document))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "stored", "event_id": document["id"]}
    rows = stored(urls, document["id"])
    assert len(rows) == 1
    row_tenant, event_type, object_id, state, payload, _ = rows[0]
    assert (row_tenant, event_type, state) == (tenant, "payment_intent.succeeded", "pending")
    assert object_id == document["data"]["object"]["id"]
    assert payload == document
    # Delivered again (the PSP retries): acknowledged, nothing new stored.
    again = post(client, *signed(document))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": document["id"]}
    assert stored(urls, document["id"]) == rows


def test_a_stored_event_has_its_job_deferred_once(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    """Stored and deferred in one transaction: one job per event, however often delivered."""
    document = event(tenant)
    body, headers = signed(document)
    for _ in range(3):
        assert post(client, body, headers).status_code == 200
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT task_name, lock, queueing_lock, args, status::text FROM procrastinate_jobs "
            "WHERE lock = %s",
            (f"psp_event:{document['id']}",),
        ).fetchall()
    lock = f"psp_event:{document['id']}"
    assert jobs == [
        (
            "ramparts.payments.process_psp_event",
            lock,
            lock,
            {"tenant_id": str(tenant), "event_id": document["id"]},
            "todo",
        )
    ]


def test_a_signed_event_holding_card_like_digits_is_stored(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    # A buyer's phone number that happens to pass Luhn: the PSP is where cards are typed, so
    # its signed events are not held to the card-number rule (else it would retry forever).
    document = event(tenant)
    document["data"]["object"]["shipping"] = {"phone": "+49 151 23456795"}
    assert holds_card_number("+49 151 23456795")
    response = post(client, *signed(document))
    assert response.status_code == 200, response.text
    assert len(stored(urls, document["id"])) == 1


def test_concurrent_deliveries_of_one_event_store_one_row(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    document = event(tenant)
    body, headers = signed(document)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: post(client, body, headers), range(16)))
    assert {a.status_code for a in answers} == {200}
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["duplicate"] * 15 + ["stored"]
    assert len(stored(urls, document["id"])) == 1


def test_the_tenant_is_the_one_on_the_psp_object(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    """Two tenants' events land in their own rows: a tenant session sees only its own."""
    other = make_tenant(urls)
    mine, theirs = event(tenant), event(other)
    for document in (mine, theirs):
        assert post(client, *signed(document)).json()["status"] == "stored"
    with psycopg.connect(libpq(urls.app)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(other),))
        seen = {r[0] for r in conn.execute("SELECT event_id FROM psp_events")}
    assert theirs["id"] in seen
    assert mine["id"] not in seen


def test_the_caller_cannot_name_the_tenant(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    """Nothing outside the signed object chooses the tenant: not a query, not a header."""
    document = event(None)
    body, headers = signed(document)
    response = client.post(
        "/webhooks/psp",
        params={"tenant": str(tenant)},
        content=body,
        headers={**headers, "X-Tenant": str(tenant)},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert stored(urls, document["id"]) == []


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({}, "object names no tenant"),
        ({"ramparts_tenant": "not-a-uuid"}, "object names no tenant"),
        ({"ramparts_tenant": str(uuid.uuid4()).upper()}, "object names no tenant"),
        ({"ramparts_tenant": str(uuid.uuid4())}, "object names an unknown tenant"),
    ],
)
def test_an_object_without_a_known_tenant_is_acknowledged_and_dropped(
    client: httpx.Client, urls: DatabaseUrls, metadata: dict[str, str], reason: str
) -> None:
    document = event(None, metadata=metadata)
    response = post(client, *signed(document))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event_id": document["id"], "reason": reason}
    assert stored(urls, document["id"]) == []


def test_an_unhandled_type_is_acknowledged_and_dropped(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    document = event(tenant, event_type="customer.created")
    response = post(client, *signed(document))
    assert response.json()["reason"] == "event type not handled"
    assert stored(urls, document["id"]) == []


def test_one_changed_byte_is_refused(
    client: httpx.Client, tenant: uuid.UUID, urls: DatabaseUrls
) -> None:
    document = event(tenant)
    body, headers = signed(document)
    changed = body.replace(b'"amount": 5000', b'"amount": 5001')
    assert changed != body
    assert "no v1 signature matches" in refused(post(client, changed, headers), "signature-refused")
    assert stored(urls, document["id"]) == []


def test_a_wrong_secret_is_refused(client: httpx.Client, tenant: uuid.UUID) -> None:
    body, headers = signed(event(tenant), secret="whsec_" + secrets.token_urlsafe(24))
    refused(post(client, body, headers), "signature-refused")


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_more_than_300_s_off_is_refused(
    client: httpx.Client, tenant: uuid.UUID, offset: int
) -> None:
    body, headers = signed(event(tenant), timestamp=int(time.time()) + offset)
    assert "300 s" in refused(post(client, body, headers), "signature-refused")


def test_a_missing_or_malformed_header_is_refused(client: httpx.Client, tenant: uuid.UUID) -> None:
    body, headers = signed(event(tenant))
    del headers["Stripe-Signature"]
    assert "missing" in refused(post(client, body, headers), "signature-refused")
    headers["Stripe-Signature"] = "t=now,v1=deadbeef"
    assert "malformed" in refused(post(client, body, headers), "signature-refused")


def test_nothing_is_parsed_before_the_signature(client: httpx.Client) -> None:
    """Broken JSON that is not signed is refused for its signature, not for its JSON; the
    same body signed reaches the JSON rules (which the edge runs on every other route)."""
    broken = b'{"id": "evt_1", "id": "evt_2"'
    _, headers = signed(broken)
    unsigned = {"Content-Type": "application/json"}
    assert "missing" in refused(post(client, broken, unsigned), "signature-refused")
    assert "line 1" in refused(post(client, broken, headers), "malformed-json")
    duplicate_key = b'{"id": "evt_1", "id": "evt_2"}'
    body, headers = signed(duplicate_key)
    assert "duplicate key" in refused(post(client, body, headers), "malformed-json")
    form, headers = signed(b"id=evt_1&type=charge.succeeded")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    assert "not JSON" in refused(post(client, form, headers), "malformed-json")


def test_a_signed_body_that_is_not_an_event_is_refused(client: httpx.Client) -> None:
    body, headers = signed({"object": "payment_intent", "id": "pi_1"})
    assert "not a Stripe event" in refused(post(client, body, headers), "not-an-event")
    document = event(uuid.uuid4())
    document["id"] = "evt_ünïcode"
    body, headers = signed(document)
    assert "event id" in refused(post(client, body, headers), "not-an-event")


def test_the_edge_rules_still_apply(client: httpx.Client, tenant: uuid.UUID) -> None:
    body, headers = signed(event(tenant))
    as_text = {**headers, "Content-Type": "text/plain"}
    refused(post(client, body, as_text), "unsupported-media-type", 415)
    huge, huge_headers = signed(b'{"pad": "' + b"x" * 2_000_000 + b'"}')
    refused(post(client, huge, huge_headers), "body-too-large", 413)


def test_no_bearer_token_is_needed_and_none_helps(client: httpx.Client) -> None:
    """The signature is the PSP's credential; a token does not stand in for it."""
    body, _ = signed(event(uuid.uuid4()))
    response = client.post(
        "/webhooks/psp",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    refused(response, "signature-refused")


def test_rotation_keeps_the_previous_secret_for_its_window(
    kms: Kms, client: httpx.Client, tenant: uuid.UUID
) -> None:
    secrets_store = WebhookSecrets(kms)
    newer = "whsec_" + secrets.token_urlsafe(24)
    secrets_store.rotate(SecretStr(newer), overlap_seconds=3600)
    time.sleep(REFRESH_SECONDS + 0.5)  # the server re-reads the list
    for secret in (newer, SECRET):  # the PSP may sign with either during the roll
        response = post(client, *signed(event(tenant), secret=secret))
        assert response.json()["status"] == "stored", secret[:6]
    # Rolled again without overlap: only the newest one is accepted.
    newest = "whsec_" + secrets.token_urlsafe(24)
    secrets_store.rotate(SecretStr(newest), overlap_seconds=0)
    time.sleep(REFRESH_SECONDS + 0.5)
    for secret in (newer, SECRET):
        refused(post(client, *signed(event(tenant), secret=secret)), "signature-refused")
    assert post(client, *signed(event(tenant), secret=newest)).json()["status"] == "stored"
    # Back to the module's secret for whatever runs after.
    secrets_store.rotate(SecretStr(SECRET), overlap_seconds=0)
    time.sleep(REFRESH_SECONDS + 0.5)


def test_the_runtime_role_cannot_rewrite_or_delete_an_event(
    urls: DatabaseUrls, tenant: uuid.UUID
) -> None:
    # The worker moves an event's state (migration 0024), nothing else of it.
    with psycopg.connect(libpq(urls.app)) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        for statement in (
            "UPDATE psp_events SET payload = '{}'::jsonb",
            "UPDATE psp_events SET object_id = 'pi_other', state = 'processed'",
            "DELETE FROM psp_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
