"""Real money activity for the reconciliation tests: payments paid at a sandbox PSP of their own
and recorded in books of their own, as the worker and the four-eyes flows record them (the
ledger references of the interfaces), with the faults a test injects on either side.

Reconciliation reads the whole PSP account and every tenant's book, so a test that checks a
run's exact result owns both: a fresh localstripe process and a fresh database (copied from a
migrated template, which is much faster than migrating).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import httpx
import psycopg
import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy.engine import URL

from ramparts.db.engine import Database, DatabaseUrls, derive_app_url, libpq
from ramparts.payments import records
from ramparts.payments.ledger import EntryKind, Ledger
from ramparts.payments.psp import TENANT_METADATA_KEY, PaymentIntent, StripePsp
from ramparts.payments.reconcile import ReconciliationReport, reconcile_day
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from tests.payments.helpers import card_payment_method

VISA = "4242424242424242"
LEDGER = Ledger()


@pytest.fixture(scope="session")
def fresh_database(
    make_database: Callable[..., DatabaseUrls], pg_server: URL
) -> Iterator[Callable[[], DatabaseUrls]]:
    """Factory: an empty, migrated database of the caller's own (a copy of a template)."""
    template = make_database()
    template_name = template.owner.database
    maintenance = libpq(pg_server)
    made: list[str] = []

    def fresh() -> DatabaseUrls:
        name = f"ramparts_test_{secrets.token_hex(6)}"
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_name}")
        made.append(name)
        owner = template.owner.set(database=name)
        return DatabaseUrls(owner_url=owner, app=derive_app_url(owner))

    yield fresh
    with psycopg.connect(maintenance, autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass(frozen=True)
class Paid:
    """A payment paid at the PSP and confirmed in the records."""

    tenant: uuid.UUID
    payment: records.Payment
    intent: PaymentIntent
    charge: str
    transaction: str  # the charge's balance transaction

    @property
    def name(self) -> str:
        return self.payment.ledger_name


@dataclass
class World:
    """One PSP account and one database, and what the money flows do with them."""

    urls: DatabaseUrls
    sandbox: Sandbox
    psp: StripePsp
    database: Database
    buyer: stripe.StripeClient
    tenants: list[uuid.UUID] = field(default_factory=list)

    @classmethod
    def open(cls, urls: DatabaseUrls, sandbox: Sandbox) -> World:
        return cls(
            urls=urls,
            sandbox=sandbox,
            psp=StripePsp.connect(SecretStr(SANDBOX_API_KEY), api_base=sandbox.api_base),
            database=Database(urls.app, pool_size=2),
            buyer=stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": sandbox.api_base}),
        )

    async def close(self) -> None:
        await self.psp.aclose()
        await self.database.dispose()

    def tenant(self) -> uuid.UUID:
        tenant = uuid.uuid4()
        with psycopg.connect(libpq(self.urls.owner), autocommit=True) as owner:
            owner.execute(
                "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Books', 'eu')",
                (tenant, f"books-{tenant.hex[:12]}"),
            )
        self.tenants.append(tenant)
        return tenant

    async def pay(self, tenant: uuid.UUID, amount: int, currency: str = "eur") -> Paid:
        """A payment created, paid with a test card at the PSP, and confirmed: no entry yet."""
        async with self.database.tenant_session(tenant) as session:
            payment = await records.create(
                session, app="shop", subject=f"order-{uuid.uuid4().hex[:8]}", payer_id=None,
                requested_by=uuid.uuid4(), amount=amount, currency=currency,
            )  # fmt: skip
        intent = await self.psp.create_payment_intent(
            tenant,
            amount=amount,
            currency=currency,
            idempotency_key=str(payment.id),
            payment_method=card_payment_method(self.buyer, VISA),
            confirm=True,
        )
        assert intent.status == "succeeded"
        assert intent.latest_charge is not None
        async with self.database.tenant_session(tenant) as session:
            payment = await records.set_psp_id(session, payment, intent.id, intent.status)
            payment = await records.confirm(session, payment, f"evt_{uuid.uuid4().hex}")
        charge = await self.psp.retrieve_movement(intent.latest_charge)
        assert charge is not None
        assert charge.balance_transaction is not None
        return Paid(tenant, payment, intent, intent.latest_charge, charge.balance_transaction)

    async def deposit(
        self,
        tenant: uuid.UUID,
        amount: int,
        currency: str = "eur",
        *,
        in_ledger: int | None = None,
        currency_in_ledger: str | None = None,
    ) -> Paid:
        """A payment paid and its deposit posted, as the worker posts it (the ledger's amount
        or currency may be made to differ)."""
        paid = await self.pay(tenant, amount, currency)
        await self.post_deposit(tenant, paid, in_ledger or amount, currency_in_ledger or currency)
        return paid

    async def post_deposit(
        self, tenant: uuid.UUID, paid: Paid, amount: int, currency: str, *, charge: str = ""
    ) -> None:
        async with self.database.tenant_session(tenant) as session:
            await LEDGER.record_deposit(
                session, payment=paid.name, amount=amount, currency=currency,
                reference=charge or paid.charge,
            )  # fmt: skip

    async def invented_deposit(self, tenant: uuid.UUID, amount: int, charge: str) -> None:
        """A deposit entry for a charge the PSP never made (and a payment nobody paid)."""
        async with self.database.tenant_session(tenant) as session:
            await LEDGER.record_deposit(
                session, payment=str(uuid.uuid4()), amount=amount, currency="eur",
                reference=charge,
            )  # fmt: skip

    async def fee(self, paid: Paid, amount: int, *, reference: str = "") -> None:
        """A PSP fee entry on the charge's balance transaction. The sandbox's fees are always
        0, so any such entry is a fee the PSP did not keep: fee drift by construction."""
        async with self.database.tenant_session(paid.tenant) as session:
            await LEDGER.record_psp_fee(
                session, payment=paid.name, reference=reference or paid.transaction,
                amount=amount, currency=paid.intent.currency,
            )  # fmt: skip

    async def refund(self, paid: Paid, amount: int, *, post: bool = True) -> str:
        """A refund made at the PSP and, when `post`, recorded as four-eyes records it."""
        refund = await self.psp.create_refund(
            paid.tenant, paid.intent.id, amount=amount, idempotency_key=uuid.uuid4().hex
        )
        if post:
            async with self.database.tenant_session(paid.tenant) as session:
                await LEDGER.record_refund(
                    session, payment=paid.name, refund=refund.id, amount=amount,
                    currency=paid.intent.currency,
                )  # fmt: skip
        return refund.id

    async def payout(self, paid: Paid, amount: int, *, post: bool = True) -> str:
        """A payout made at the PSP (the sandbox pays out in EUR only) and, when `post`,
        recorded as four-eyes records a disbursement."""
        payout = self.buyer.v1.payouts.create(
            params={
                "amount": amount,
                "currency": "eur",
                "metadata": {TENANT_METADATA_KEY: str(paid.tenant)},
            }
        )
        if post:
            async with self.database.tenant_session(paid.tenant) as session:
                await LEDGER.record_disbursement(
                    session, payment=paid.name, disbursement=payout.id, amount=amount,
                    currency="eur",
                )  # fmt: skip
        return payout.id

    async def reverse(self, tenant: uuid.UUID, kind: EntryKind, reference: str) -> None:
        """What the worker posts when the PSP says a refund or payout failed after all."""
        async with self.database.tenant_session(tenant) as session:
            entry = await LEDGER.entry(session, kind, reference)
            assert entry is not None
            await LEDGER.reverse(session, entry.id, reference=f"{reference}.failed")

    def psp_sets(self, path: str, **fields: str) -> None:
        """Change an object at the PSP as the PSP itself would (a refund canceled, a charge
        failing late): localstripe applies an update of any field it has."""
        response = httpx.post(
            f"{self.sandbox.api_base}/v1/{path}",
            data=fields,
            auth=(SANDBOX_API_KEY, ""),
            timeout=5,
        )
        assert response.status_code == 200, response.text

    async def reconcile(self, day: date | None = None, **options: object) -> ReconciliationReport:
        return await reconcile_day(
            self.urls.owner,
            self.psp,
            day or datetime.now(UTC).date(),
            **options,  # type: ignore[arg-type]
        )
