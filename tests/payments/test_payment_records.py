"""What the database itself refuses of payment records (migration 0023), for every role:
a terminal payment, refund or payout never moves on, a PSP object is never swapped, and a
payment is `succeeded` only with its confirmation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ramparts.db.engine import DatabaseUrls, libpq


@pytest.fixture
def owner(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        yield conn


def _payment(owner: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    tenant, payment = uuid.uuid4(), uuid.uuid4()
    owner.execute(
        "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'T', 'eu')",
        (tenant, f"t-{tenant.hex[:10]}"),
    )
    owner.execute(
        "INSERT INTO payments (tenant_id, id, app, subject, requested_by, psp_id, amount, "
        "currency, status) VALUES (%s, %s, 'shop', 'order-1', %s, %s, 5000, 'eur', "
        "'processing')",
        (tenant, payment, uuid.uuid4(), f"pi_{payment.hex}"),
    )
    return tenant, payment


@pytest.mark.parametrize("table", ["payment_refunds", "payment_disbursements"])
def test_a_failed_refund_or_payout_stays_failed_and_keeps_its_psp_object(
    owner: psycopg.Connection, table: str
) -> None:
    tenant, payment = _payment(owner)
    row = uuid.uuid4()
    owner.execute(
        f"INSERT INTO {table} (tenant_id, id, payment_id, psp_id, amount, currency, status, "
        "requested_by, approved_by) VALUES (%s, %s, %s, 'x_1', 100, 'eur', 'pending', %s, %s)",
        (tenant, row, payment, uuid.uuid4(), uuid.uuid4()),
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="PSP object"):
        owner.execute(f"UPDATE {table} SET psp_id = 'x_2' WHERE id = %s", (row,))
    owner.execute(f"UPDATE {table} SET status = 'failed' WHERE id = %s", (row,))
    for status in ("pending", "canceled"):
        with pytest.raises(psycopg.errors.CheckViolation, match="cannot change"):
            owner.execute(f"UPDATE {table} SET status = %s WHERE id = %s", (status, row))


def test_a_payment_succeeds_only_confirmed_and_then_stays(owner: psycopg.Connection) -> None:
    _, payment = _payment(owner)
    with pytest.raises(psycopg.errors.CheckViolation):
        owner.execute("UPDATE payments SET status = 'succeeded' WHERE id = %s", (payment,))
    owner.execute(
        "UPDATE payments SET status = 'succeeded', confirmed_at = now(), "
        "confirmed_by_event = 'evt_1' WHERE id = %s",
        (payment,),
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="cannot change"):
        owner.execute("UPDATE payments SET status = 'processing' WHERE id = %s", (payment,))
    with pytest.raises(psycopg.errors.CheckViolation, match="confirmation cannot change"):
        owner.execute("UPDATE payments SET confirmed_by_event = 'evt_2' WHERE id = %s", (payment,))
