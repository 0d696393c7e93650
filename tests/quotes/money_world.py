"""A quote app with money in it, for the four-eyes tests: people of one tenant signed in to a
live server that talks to the real sandbox PSP, an accepted quote, and its deposit paid at the
PSP with a test card and confirmed as the worker confirms it (the worker is not needed)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import stripe
from pydantic import SecretStr

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments import records
from ramparts.payments.ledger import Ledger, held_funds
from ramparts.payments.psp import StripePsp
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.web.pages import WEB_CLIENT_ID
from tests.ai.test_assistant import NEW_QUOTE, sign_in, signed_in_again
from tests.identity.helpers import Account, register_client
from tests.payments.helpers import card_payment_method

VISA = "4242424242424242"
DEPOSIT = 50_000


@dataclass
class Person:
    account: Account
    headers: dict[str, str]

    @property
    def user_id(self) -> uuid.UUID:
        return self.account.user_id


@dataclass
class World:
    """One tenant's buyer, seller and two Finance users on `server`."""

    server: httpx.Client
    urls: DatabaseUrls
    sandbox: Sandbox
    people: dict[str, Person] = field(default_factory=dict)

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.people["finance"].account.tenant_id

    def on(self, server: httpx.Client) -> World:
        """The same people, each signed in again on `server` (another live server of the same
        database: its tokens are its own). Once per person and test: it uses the next TOTP
        code."""
        people = {
            name: Person(person.account, signed_in_again(server, person.account))
            for name, person in self.people.items()
        }
        return World(server, self.urls, self.sandbox, people)

    def post(self, who: str, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
        """`who` POSTs `body` with an `Idempotency-Key` (a fresh one unless `key`)."""
        headers = {**self.people[who].headers, "Idempotency-Key": key or secrets.token_hex(8)}
        return self.server.post(path, json=body, headers=headers)

    def decide(self, who: str, approval: str, verdict: str = "approve") -> httpx.Response:
        return self.server.post(
            f"/api/approvals/{approval}/{verdict}", headers=self.people[who].headers
        )

    def accepted_quote(self) -> str:
        """A quote the buyer asked for, the seller answered and the buyer accepted."""
        created = self.server.post(
            "/api/quotes", json=NEW_QUOTE, headers=self.people["buyer"].headers
        )
        assert created.status_code == 201, created.text
        quote: str = created.json()["id"]
        for who, step in (("seller", "submit"), ("buyer", "accept")):
            moved = self.server.post(
                f"/api/quotes/{quote}/{step}", headers=self.people[who].headers
            )
            assert moved.status_code == 200, moved.text
        return quote

    def deposit(self, quote: str, *, amount: int = DEPOSIT, paid: bool = True) -> uuid.UUID:
        """The quote's deposit: a payment row and its PaymentIntent at the sandbox, paid with
        a test card and, when `paid`, confirmed as the worker confirms it (the payment marked
        paid by a verified event's id, the deposit posted to the ledger with the charge)."""
        return asyncio.run(self._deposit(uuid.UUID(quote), amount, paid))

    async def _deposit(self, quote: uuid.UUID, amount: int, paid: bool) -> uuid.UUID:
        database = Database(self.urls.app, pool_size=1)
        psp = StripePsp.connect(SecretStr(SANDBOX_API_KEY), api_base=self.sandbox.api_base)
        try:
            async with database.tenant_session(self.tenant_id) as session:
                payment = await records.create(
                    session,
                    app="quotes",
                    subject=str(quote),
                    payer_id=self.people["buyer"].user_id,
                    requested_by=self.people["finance"].user_id,
                    amount=amount,
                    currency="eur",
                )
            method = card_payment_method(self.buyer_at_psp(), VISA)  # the buyer, at the PSP
            intent = await psp.create_payment_intent(
                self.tenant_id,
                amount=amount,
                currency="eur",
                idempotency_key=str(payment.id),
                payment_method=method,
                confirm=True,
            )
            assert intent.status == "succeeded"
            assert intent.latest_charge is not None
            async with database.tenant_session(self.tenant_id) as session:
                payment = await records.set_psp_id(session, payment, intent.id, intent.status)
                if paid:
                    locked = await records.by_id(session, payment.id, lock=True)
                    assert locked is not None
                    await records.confirm(session, locked, f"evt_{secrets.token_hex(12)}")
                    await Ledger().record_deposit(
                        session,
                        payment=locked.ledger_name,
                        amount=amount,
                        currency="eur",
                        reference=intent.latest_charge,
                    )
            return payment.id
        finally:
            await psp.aclose()
            await database.dispose()

    def psp_id(self, payment: uuid.UUID) -> str:
        """The payment's PaymentIntent id."""
        with psycopg.connect(libpq(self.urls.owner)) as conn:
            row = conn.execute("SELECT psp_id FROM payments WHERE id = %s", (payment,)).fetchone()
        assert row is not None
        return str(row[0])

    def buyer_at_psp(self) -> stripe.StripeClient:
        return stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": self.sandbox.api_base})

    def _in_tenant(self, read: Callable[[Any], Any]) -> Any:
        """`await read(session)` in a tenant session of the world's tenant."""

        async def run() -> Any:
            database = Database(self.urls.app, pool_size=1)
            try:
                async with database.tenant_session(self.tenant_id) as session:
                    return await read(session)
            finally:
                await database.dispose()

        return asyncio.run(run())

    def held(self, payment: uuid.UUID) -> int:
        """What the ledger still holds for the payment."""
        held: int = self._in_tenant(
            lambda session: Ledger().balance(session, held_funds(str(payment)), "eur")
        )
        return held

    def entries(self, payment: uuid.UUID) -> list[tuple[str, str, int]]:
        """The payment's ledger entries: (kind, reference, what it moved into or out of the
        held funds), each checked to balance."""
        posted = self._in_tenant(lambda session: Ledger().entries_of(session, str(payment)))
        shown = []
        for entry in posted:
            assert sum(amount for _, _, amount in entry.postings) == 0  # balanced
            held = sum(
                -amount for name, _, amount in entry.postings if name == f"held_funds:{payment}"
            )
            shown.append((entry.kind.value, entry.reference, held))
        return shown

    def rows(self, table: str, payment: uuid.UUID) -> list[dict[str, Any]]:
        """The payment's refunds or disbursements, as the database has them."""
        assert table in {"payment_refunds", "payment_disbursements"}
        with psycopg.connect(libpq(self.urls.owner)) as conn:
            cursor = conn.execute(
                f"SELECT psp_id, amount, currency, status, requested_by, approved_by "
                f"FROM {table} WHERE tenant_id = %s AND payment_id = %s ORDER BY created_at",
                (self.tenant_id, payment),
            )
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def approvals(self) -> list[dict[str, Any]]:
        """Every approval request of the tenant, oldest first."""
        with psycopg.connect(libpq(self.urls.owner)) as conn:
            cursor = conn.execute(
                "SELECT id, origin, conversation_id, tool, arguments, status, requested_by, "
                "decided_by, result, provenance, origins FROM ai_approvals "
                "WHERE tenant_id = %s ORDER BY created_at, id",
                (self.tenant_id,),
            )
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def make_world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    sandbox: Sandbox,
    **server: Any,
) -> World:
    """A live server pointed at the sandbox PSP (its key in `kms`), and a tenant's buyer,
    seller and two Finance users signed in (with a second factor, just now)."""
    live = serve_app(psp_api_base=sandbox.api_base, **server)
    world = World(live, urls, sandbox)
    tenant = None
    for name, role in (
        ("finance", FINANCE),
        ("finance2", FINANCE),
        ("buyer", BUYER),
        ("seller", SELLER),
    ):
        account, headers = sign_in(live, urls, kms, role, tenant=tenant)
        tenant = account.tenant
        world.people[name] = Person(account, headers)
    return world


def make_web_world(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, sandbox: Sandbox
) -> World:
    """`make_world`, with the first-party web client registered for the server's address
    (its people can sign in to the web app too)."""
    world = make_world(serve_app, urls, kms, sandbox)
    register_client(urls, kms, WEB_CLIENT_ID, f"{world.server.base_url}/app/callback")
    return world
