"""The Stripe adapter against a real localstripe process, through the official SDK."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from ramparts.crypto.kms import Kms
from ramparts.payments.psp import (
    TENANT_METADATA_KEY,
    PspDeclinedError,
    PspError,
    PspNotFoundError,
    StripePsp,
    derive_idempotency_key,
)
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from tests.live import temporary_kms
from tests.payments.helpers import card_payment_method

pytestmark = pytest.mark.anyio

VISA = "4242424242424242"
VISA_3DS = "4000002760003184"


def test_the_sandbox_answers_on_loopback_and_stops() -> None:
    own = Sandbox().start()
    try:
        assert own.running
        assert own.api_base.startswith("http://127.0.0.1:")
        answer = httpx.get(f"{own.api_base}/v1/balance", auth=(SANDBOX_API_KEY, ""))
        assert answer.status_code == 200
        assert "available" in answer.json()
    finally:
        own.stop()
    assert not own.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{own.port}/v1/balance", timeout=2)


def test_the_sandbox_starts_empty(sandbox: Sandbox, buyer: stripe.StripeClient) -> None:
    """Each instance starts from scratch: another instance's intents are not there."""
    created = buyer.v1.payment_intents.create(params={"amount": 100, "currency": "eur"})
    with Sandbox() as other:
        fresh = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": other.api_base})
        assert fresh.v1.payment_intents.list().data == []
        with pytest.raises(stripe.InvalidRequestError):
            fresh.v1.payment_intents.retrieve(created.id)


async def test_intent_is_tagged_with_its_tenant_and_hidden_from_others(
    psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    intent = await psp.create_payment_intent(
        tenant,
        amount=2500,
        currency="eur",
        idempotency_key="k-1",
        # A caller's metadata cannot name another tenant: the adapter's tag wins.
        metadata={"payment": "p-1", TENANT_METADATA_KEY: str(other)},
    )
    assert intent.status == "requires_payment_method"
    assert (intent.amount, intent.currency) == (2500, "eur")
    assert intent.client_secret
    at_psp = buyer.v1.payment_intents.retrieve(intent.id)
    assert at_psp.metadata[TENANT_METADATA_KEY] == str(tenant)
    assert at_psp.metadata["payment"] == "p-1"
    assert (await psp.retrieve_payment_intent(tenant, intent.id)).id == intent.id
    with pytest.raises(PspNotFoundError):
        await psp.retrieve_payment_intent(other, intent.id)
    with pytest.raises(PspNotFoundError):
        await psp.retrieve_payment_intent(tenant, "pi_doesnotexist")
    with pytest.raises(PspNotFoundError):
        await psp.create_refund(other, intent.id, amount=100, idempotency_key="r")


async def test_charge_refund_and_balance_transactions(
    psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = uuid.uuid4()
    method = card_payment_method(buyer, VISA)
    paid = await psp.create_payment_intent(
        tenant,
        amount=4000,
        currency="eur",
        idempotency_key="charge-1",
        payment_method=method,
        confirm=True,
    )
    assert paid.status == "succeeded"
    assert paid.latest_charge
    assert paid.latest_charge.startswith("ch_")
    refund = await psp.create_refund(tenant, paid.id, amount=1500, idempotency_key="refund-1")
    assert (refund.status, refund.amount, refund.currency) == ("succeeded", 1500, "eur")
    assert refund.payment_intent == paid.id

    transactions = {t.source: t for t in await psp.balance_transactions()}
    charge = transactions[paid.latest_charge]
    assert (charge.type, charge.amount, charge.currency) == ("charge", 4000, "eur")
    assert charge.net == charge.amount - charge.fee
    refunded = transactions[refund.id]
    assert (refunded.type, refunded.amount) == ("refund", -1500)

    window = await psp.balance_transactions(
        created_from=charge.created, created_until=charge.created + 1
    )
    assert charge.id in {t.id for t in window}
    assert all(charge.created <= t.created < charge.created + 1 for t in window)
    assert await psp.balance_transactions(created_from=charge.created + 3600) == []
    with pytest.raises(ValueError, match="amount"):
        await psp.create_refund(tenant, paid.id, amount=0, idempotency_key="refund-2")


async def test_3ds_card_requires_action_until_authenticated(
    psp: StripePsp, buyer: stripe.StripeClient, sandbox: Sandbox
) -> None:
    tenant = uuid.uuid4()
    intent = await psp.create_payment_intent(
        tenant,
        amount=900,
        currency="eur",
        idempotency_key="3ds",
        payment_method=card_payment_method(buyer, VISA_3DS),
        confirm=True,
    )
    assert intent.status == "requires_action"
    assert (await psp.retrieve_payment_intent(tenant, intent.id)).status == "requires_action"
    sandbox.authenticate(intent.id)
    assert (await psp.retrieve_payment_intent(tenant, intent.id)).status == "succeeded"


async def test_created_then_confirmed(psp: StripePsp, buyer: stripe.StripeClient) -> None:
    tenant = uuid.uuid4()
    intent = await psp.create_payment_intent(
        tenant, amount=700, currency="usd", idempotency_key="later"
    )
    # The buyer attaches a card on the PSP's page; the runtime then confirms.
    buyer.v1.payment_intents.update(
        intent.id, params={"payment_method": card_payment_method(buyer, VISA)}
    )
    confirmed = await psp.confirm_payment_intent(tenant, intent.id, idempotency_key="later")
    assert confirmed.status == "succeeded"
    with pytest.raises(PspNotFoundError):
        await psp.confirm_payment_intent(uuid.uuid4(), intent.id, idempotency_key="later")


async def test_bad_amounts_are_refused_before_any_call(psp: StripePsp) -> None:
    for amount, currency in [(0, "eur"), (-5, "eur"), (10**9, "eur"), (100, "EUR"), (1, "eu")]:
        with pytest.raises(ValueError, match=r"amount|currency"):
            await psp.create_payment_intent(
                uuid.uuid4(), amount=amount, currency=currency, idempotency_key="x"
            )


def test_derived_idempotency_keys() -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    key = derive_idempotency_key(tenant, "payment_intent.create", "abc")
    assert key == derive_idempotency_key(tenant, "payment_intent.create", "abc")
    assert key != derive_idempotency_key(other, "payment_intent.create", "abc")
    assert key != derive_idempotency_key(tenant, "refund.create", "abc")
    assert key != derive_idempotency_key(tenant, "payment_intent.create", "abd")
    assert key.startswith("ramparts-")
    assert "abc" not in key.removeprefix("ramparts-")
    assert len(key) <= 255


def test_no_api_key_in_the_kms_is_refused(tmp_path: Path, sandbox: Sandbox) -> None:
    with pytest.raises(PspError, match="no PSP API key"):
        StripePsp.from_kms(temporary_kms(tmp_path), api_base=sandbox.api_base)


# --- retries through a faulty proxy ------------------------------------------------------------
ERRORS = {
    0: b'{"error": {"type": "api_error", "message": "injected"}}',
    402: b'{"error": {"type": "card_error", "code": "card_declined", '
    b'"decline_code": "generic_decline", "message": "Your card was declined (4242)."}}',
}


class FaultyProxy:
    """Forwards to the sandbox, but answers the first `faults` POSTs itself with `fault`:
    a status code, or "drop" to close the connection without an answer."""

    def __init__(self, upstream: str, faults: int, fault: int | str) -> None:
        self.upstream = upstream
        self.faults = faults
        self.fault = fault
        self.posts: list[dict[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.posts.append({k.lower(): v for k, v in self.headers.items()})
                if len(proxy.posts) <= proxy.faults:
                    if proxy.fault == "drop":
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.send_response(int(proxy.fault))
                    self.send_header("content-type", "application/json")
                    message = ERRORS.get(int(proxy.fault), ERRORS[0])
                    self.send_header("content-length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host"}}
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def faulty(sandbox: Sandbox) -> Iterator[Callable[[int, int | str], FaultyProxy]]:
    made: list[FaultyProxy] = []

    def make(faults: int, fault: int | str) -> FaultyProxy:
        made.append(FaultyProxy(sandbox.api_base, faults, fault))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


@pytest.mark.parametrize("fault", [503, 500, 409, "drop"])
async def test_retries_reuse_the_derived_key(
    faulty: Callable[[int, int | str], FaultyProxy],
    psp_kms: Kms,
    buyer: stripe.StripeClient,
    fault: int | str,
) -> None:
    proxy = faulty(2, fault)
    psp = StripePsp.from_kms(psp_kms, api_base=proxy.url, max_network_retries=3)
    tenant = uuid.uuid4()
    try:
        intent = await psp.create_payment_intent(
            tenant, amount=1234, currency="eur", idempotency_key="retry-me"
        )
    finally:
        await psp.aclose()
    assert len(proxy.posts) == 3  # two faults, then through
    expected = derive_idempotency_key(tenant, "payment_intent.create", "retry-me")
    assert [p["idempotency-key"] for p in proxy.posts] == [expected] * 3
    assert buyer.v1.payment_intents.retrieve(intent.id).amount == 1234


async def test_retries_give_up_and_client_errors_are_not_retried(
    faulty: Callable[[int, int | str], FaultyProxy], psp_kms: Kms
) -> None:
    exhausted = faulty(10, 503)
    psp = StripePsp.from_kms(psp_kms, api_base=exhausted.url, max_network_retries=2)
    with pytest.raises(PspError, match=r"HTTP 503") as refused:
        await psp.create_payment_intent(
            uuid.uuid4(), amount=100, currency="eur", idempotency_key="k"
        )
    await psp.aclose()
    assert "injected" not in str(refused.value)  # the PSP's own words stay out
    assert len(exhausted.posts) == 3

    bad = faulty(10, 400)
    psp = StripePsp.from_kms(psp_kms, api_base=bad.url, max_network_retries=3)
    with pytest.raises(PspError, match=r"HTTP 400"):
        await psp.create_payment_intent(
            uuid.uuid4(), amount=100, currency="eur", idempotency_key="k"
        )
    await psp.aclose()
    assert len(bad.posts) == 1


async def test_a_decline_is_named_by_its_code(
    faulty: Callable[[int, int | str], FaultyProxy], psp_kms: Kms
) -> None:
    declining = faulty(10, 402)
    psp = StripePsp.from_kms(psp_kms, api_base=declining.url, max_network_retries=3)
    with pytest.raises(PspDeclinedError) as declined:
        await psp.create_payment_intent(
            uuid.uuid4(), amount=100, currency="eur", idempotency_key="k"
        )
    await psp.aclose()
    assert declined.value.code == "card_declined"
    assert "4242" not in str(declined.value)
    assert len(declining.posts) == 1  # a decline is an answer, not a fault: never retried
