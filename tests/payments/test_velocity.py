"""Velocity limits (PAY-2) on real attempts: per card per hour, per payer per day, amount per
payer per day; declines count, concurrent attempts are counted one after the other, and the
refusal says when to come back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
import stripe

from ramparts.config import Settings
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments.psp import StripePsp
from ramparts.payments.velocity import Limit, VelocityLimits
from ramparts.problems import Problem, ProblemType
from tests.payments.helpers import (
    DECLINED,
    MASTERCARD,
    VISA,
    attempts,
    card_payment_method,
    new_payment,
    pay,
)
from tests.payments.test_idempotency import new_tenant

pytestmark = pytest.mark.anyio

# Five more 16-digit cards the sandbox charges (its fingerprint is of the number).
CARDS = [VISA, MASTERCARD, "4000056655665556", "5200828282828210", "6011111111111117"]


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(urls.app, pool_size=8)
    yield db
    await db.dispose()


def _refusal(problem: Problem, limit: Limit) -> int:
    """The Retry-After of a velocity refusal of `limit`."""
    assert (problem.status, problem.type) == (429, ProblemType.VELOCITY_LIMIT), problem
    assert problem.extensions == {"limit": limit.value}
    assert problem.headers is not None
    return int(problem.headers["Retry-After"])


def _backdate(urls: DatabaseUrls, tenant: uuid.UUID, by: timedelta) -> None:
    """Move every attempt of `tenant` `by` into the past."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute(
            "UPDATE payment_attempts SET created_at = created_at - %s WHERE tenant_id = %s",
            (by, tenant),
        )


async def test_one_card_per_hour_across_payers_and_declines_count(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    limits = VelocityLimits(card_attempts_per_hour=2, payer_attempts_per_day=100)
    # A declined attempt, then a paid one, with the same card by two payers.
    first = await new_payment(database, psp, tenant, uuid.uuid4())
    with pytest.raises(Problem) as declined:
        await pay(database, psp, tenant, first, card_payment_method(buyer, DECLINED), limits=limits)
    assert declined.value.status == 402
    second = await new_payment(database, psp, tenant, uuid.uuid4())
    with pytest.raises(Problem) as declined_again:
        await pay(
            database, psp, tenant, second, card_payment_method(buyer, DECLINED), limits=limits
        )
    assert declined_again.value.status == 402

    third = await new_payment(database, psp, tenant, uuid.uuid4())
    with pytest.raises(Problem) as refused:
        await pay(database, psp, tenant, third, card_payment_method(buyer, DECLINED), limits=limits)

    assert 3590 <= _refusal(refused.value, Limit.CARD_ATTEMPTS_PER_HOUR) <= 3600
    assert [a["outcome"] for a in attempts(urls, tenant)] == ["declined", "declined"]
    # Another card is another count; the refused one never reached the PSP.
    assert (
        await pay(database, psp, tenant, third, card_payment_method(buyer, VISA), limits=limits)
    ).status == "processing"
    # Past the hour, the card may be tried again.
    _backdate(urls, tenant, timedelta(minutes=61))
    fourth = await new_payment(database, psp, tenant, uuid.uuid4())
    with pytest.raises(Problem) as declined_later:
        await pay(
            database, psp, tenant, fourth, card_payment_method(buyer, DECLINED), limits=limits
        )
    assert declined_later.value.status == 402


async def test_retry_after_is_when_the_oldest_blocking_attempt_leaves_the_hour(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    limits = VelocityLimits(card_attempts_per_hour=2, payer_attempts_per_day=100)
    for _ in range(2):
        payment = await new_payment(database, psp, tenant, uuid.uuid4())
        await pay(database, psp, tenant, payment, card_payment_method(buyer, VISA), limits=limits)
    _backdate(urls, tenant, timedelta(minutes=50))  # both 50 minutes old: free in 10

    payment = await new_payment(database, psp, tenant, uuid.uuid4())
    with pytest.raises(Problem) as refused:
        await pay(database, psp, tenant, payment, card_payment_method(buyer, VISA), limits=limits)

    assert 590 <= _refusal(refused.value, Limit.CARD_ATTEMPTS_PER_HOUR) <= 600


async def test_attempts_per_payer_per_day(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant, payer = new_tenant(urls), uuid.uuid4()
    limits = VelocityLimits(payer_attempts_per_day=3)
    # Card after card: a declined one counts as much as a paid one.
    declined = await new_payment(database, psp, tenant, payer)
    with pytest.raises(Problem):
        await pay(
            database, psp, tenant, declined, card_payment_method(buyer, DECLINED), limits=limits
        )
    for number in CARDS[:2]:
        payment = await new_payment(database, psp, tenant, payer)
        await pay(database, psp, tenant, payment, card_payment_method(buyer, number), limits=limits)

    payment = await new_payment(database, psp, tenant, payer)
    with pytest.raises(Problem) as refused:
        await pay(
            database, psp, tenant, payment, card_payment_method(buyer, CARDS[2]), limits=limits
        )

    retry_after = _refusal(refused.value, Limit.PAYER_ATTEMPTS_PER_DAY)
    assert 86_390 <= retry_after <= 86_400
    assert len(attempts(urls, tenant)) == 3
    # Another payer is not held back.
    other = await new_payment(database, psp, tenant, uuid.uuid4())
    assert (
        await pay(database, psp, tenant, other, card_payment_method(buyer, CARDS[3]), limits=limits)
    ).status == "processing"


async def test_amount_per_payer_per_day_in_each_currency(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant, payer = new_tenant(urls), uuid.uuid4()
    limits = VelocityLimits(payer_amount_per_day=10_000)
    first = await new_payment(database, psp, tenant, payer, amount=6_000)
    await pay(database, psp, tenant, first, card_payment_method(buyer, CARDS[0]), limits=limits)
    _backdate(urls, tenant, timedelta(hours=3))

    second = await new_payment(database, psp, tenant, payer, amount=6_000)
    with pytest.raises(Problem) as refused:
        await pay(
            database, psp, tenant, second, card_payment_method(buyer, CARDS[1]), limits=limits
        )
    # Free once the first 6,000 leaves the day, 21 hours from now.
    retry_after = _refusal(refused.value, Limit.PAYER_AMOUNT_PER_DAY)
    assert 21 * 3600 - 10 <= retry_after <= 21 * 3600
    assert "12000 EUR" in str(refused.value)

    # What still fits passes; another currency is another count.
    fits = await new_payment(database, psp, tenant, payer, amount=4_000)
    await pay(database, psp, tenant, fits, card_payment_method(buyer, CARDS[2]), limits=limits)
    dollars = await new_payment(database, psp, tenant, payer, amount=9_000, currency="usd")
    await pay(database, psp, tenant, dollars, card_payment_method(buyer, CARDS[3]), limits=limits)
    # One amount beyond the limit never fits: come back tomorrow.
    huge = await new_payment(database, psp, tenant, uuid.uuid4(), amount=10_001)
    with pytest.raises(Problem) as too_large:
        await pay(database, psp, tenant, huge, card_payment_method(buyer, CARDS[4]), limits=limits)
    assert _refusal(too_large.value, Limit.PAYER_AMOUNT_PER_DAY) == 86_400
    assert [a["amount"] for a in attempts(urls, tenant)] == [6_000, 4_000, 9_000]


async def test_concurrent_attempts_with_one_card_are_counted_one_after_the_other(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    limits = VelocityLimits(card_attempts_per_hour=2)
    payments = [await new_payment(database, psp, tenant, uuid.uuid4()) for _ in range(6)]
    methods = [card_payment_method(buyer, VISA) for _ in payments]

    outcomes = await asyncio.gather(
        *(
            pay(database, psp, tenant, p, m, limits=limits)
            for p, m in zip(payments, methods, strict=True)
        ),
        return_exceptions=True,
    )

    paid = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, Problem)]
    assert len(paid) == 2, outcomes
    assert {(r.status, r.extensions["limit"]) for r in refused} == {(429, "card_attempts_per_hour")}
    assert len(refused) == 4
    assert len(attempts(urls, tenant)) == 2


def test_the_limits_are_settings_with_safe_defaults() -> None:
    defaults = VelocityLimits.from_settings(Settings())
    assert defaults == VelocityLimits()
    assert (
        defaults.card_attempts_per_hour,
        defaults.payer_attempts_per_day,
        defaults.payer_amount_per_day,
    ) == (5, 10, 5_000_000)
    tight = Settings(velocity_card_attempts_per_hour=1, velocity_payer_amount_per_day=100)
    assert VelocityLimits.from_settings(tight).card_attempts_per_hour == 1
    with pytest.raises(ValueError, match="positive"):
        VelocityLimits(payer_attempts_per_day=0)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings(velocity_payer_attempts_per_day=0)
