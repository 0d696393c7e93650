"""Property: whatever sequence of deposits, fees, refunds, disbursements, reversals and replays
the money flows post, and whatever faults strike them (an exception after posting, the
database connection killed before COMMIT, an unbalanced entry slipped into the same
transaction), every entry stays balanced, nothing is posted twice, no held funds go below
zero, and the balances equal those of a plain model that applies only what committed."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import SQLAlchemyError

from ramparts.db.engine import Database, DatabaseUrls, TransactionAbortedError, driver_of, libpq
from ramparts.payments.ledger import (
    InsufficientFundsError,
    Ledger,
    LedgerConflictError,
    PostedEntry,
)
from ramparts.payments.ledger_verify import verify_book

LEDGER = Ledger()
PAYMENTS = ("pi_a", "pi_b", "pi_c")
MOVES = ("deposit", "fee", "refund", "disbursement", "reverse", "replay")
FAULTS = ("none", "none", "none", "raise", "kill", "unbalanced")


class _FaultError(Exception):
    """Raised inside a transaction after it posted: the transaction must leave no trace."""


async def _fault(session: Any, fault: str, owner: psycopg.Connection) -> None:
    """Strike the open transaction, which has just posted, as `fault` says."""
    if fault == "raise":
        raise _FaultError
    if fault == "unbalanced":
        await _unbalanced_sibling(session)
    if fault == "kill":
        driver = await driver_of(session)
        row = await (await driver.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        owner.execute("SELECT pg_terminate_backend(%s)", (row[0],))


@dataclass(frozen=True)
class Move:
    kind: str
    payment: str
    amount: int
    currency: str
    fault: str
    pick: int  # which earlier entry a reversal or a replay is about


@dataclass
class Model:
    """The books as they should be: only what committed, applied once."""

    net: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: Committed entries by id, with the move that posted them (a replay repeats it).
    entries: dict[uuid.UUID, tuple[Move, str, PostedEntry]] = field(default_factory=dict)
    reversed: set[uuid.UUID] = field(default_factory=set)

    def held(self, payment: str, currency: str) -> int:
        return -self.net[f"held_funds:{payment}", currency]

    def apply(self, entry: PostedEntry) -> None:
        for account, currency, amount in entry.postings:
            self.net[account, currency] += amount


moves = st.builds(
    Move,
    kind=st.sampled_from(MOVES),
    payment=st.sampled_from(PAYMENTS),
    amount=st.integers(1, 5_000),
    currency=st.sampled_from(("EUR", "USD")),
    fault=st.sampled_from(FAULTS),
    pick=st.integers(0, 1_000),
)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def database(runner: asyncio.Runner, urls: DatabaseUrls) -> Iterator[Database]:
    database = Database(urls.app, pool_size=2)
    yield database
    runner.run(database.dispose())


@pytest.fixture(scope="module")
def owner(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        yield conn


async def _post(session: Any, move: Move, reference: str, model: Model) -> PostedEntry:
    """The ledger call for `move`; a replay is a committed entry's call again, as posted."""
    if move.kind == "replay":
        first, first_reference, entry = list(model.entries.values())[move.pick % len(model.entries)]
        if entry.reverses is not None:
            return await LEDGER.reverse(session, entry.reverses, reference=first_reference)
        return await _post(session, first, first_reference, model)
    if move.kind == "reverse":
        target = list(model.entries)[move.pick % len(model.entries)]
        return await LEDGER.reverse(session, target, reference=reference)
    record = {
        "deposit": partial(LEDGER.record_deposit, reference=reference),
        "fee": partial(LEDGER.record_psp_fee, reference=reference),
        "refund": partial(LEDGER.record_refund, refund=reference),
        "disbursement": partial(LEDGER.record_disbursement, disbursement=reference),
    }[move.kind]
    return await record(session, payment=move.payment, amount=move.amount, currency=move.currency)


def _expected_refusal(move: Move, model: Model) -> type[Exception] | None:
    """What the ledger must refuse this move with, by the model."""
    drawing = move.kind in {"refund", "disbursement"}
    if drawing and model.held(move.payment, move.currency) < move.amount:
        return InsufficientFundsError
    if move.kind == "reverse":
        target = list(model.entries)[move.pick % len(model.entries)]
        _, _, entry = model.entries[target]
        if entry.kind == "reversal" or target in model.reversed:
            return LedgerConflictError
        for account, currency, amount in entry.postings:
            if account.startswith("held_funds:") and -model.net[account, currency] + amount < 0:
                return InsufficientFundsError
    return None


async def _unbalanced_sibling(session: Any) -> None:
    """An entry written past the service, off by one: its transaction must not commit."""
    driver = await driver_of(session)
    await driver.execute(
        "WITH e AS (INSERT INTO ledger_entries (tenant_id, kind, reference) VALUES "
        "(NULLIF(current_setting('app.tenant_id', true), '')::uuid, 'psp_fee', "
        "'txn_' || gen_random_uuid()) RETURNING tenant_id, id) "
        "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, amount)"
        " SELECT tenant_id, id, 1, 'psp_clearing', 'EUR', 1 FROM e"
    )


async def _play(
    database: Database, owner: psycopg.Connection, tenant: uuid.UUID, plan: list[Move]
) -> Model:
    model = Model()
    for number, move in enumerate(plan):
        if move.kind in {"reverse", "replay"} and not model.entries:
            continue
        reference = f"{move.kind}_{number}"
        refusal = _expected_refusal(move, model)
        outcome: PostedEntry | Exception
        try:
            async with database.tenant_session(tenant) as session:
                outcome = await _attempt(session, move, reference, model)
                if isinstance(outcome, PostedEntry):
                    await _fault(session, move.fault, owner)
        except _FaultError:
            continue
        except (psycopg.Error, SQLAlchemyError, TransactionAbortedError):
            assert move.fault in {"kill", "unbalanced"}, move
            continue
        if not isinstance(outcome, PostedEntry):
            assert type(outcome) is refusal, (move, outcome)
            continue
        assert refusal is None, (move, refusal)
        assert move.fault == "none", move  # a faulty transaction never commits
        if move.kind == "replay":
            assert outcome.replayed
            assert outcome.id in model.entries
            continue
        assert not outcome.replayed
        model.entries[outcome.id] = (move, reference, outcome)
        model.apply(outcome)
        if outcome.reverses is not None:
            model.reversed.add(outcome.reverses)
    return model


async def _attempt(
    session: Any, move: Move, reference: str, model: Model
) -> PostedEntry | Exception:
    """The entry posted, or the refusal (which leaves the transaction usable)."""
    try:
        return await _post(session, move, reference, model)
    except (InsufficientFundsError, LedgerConflictError) as exc:
        return exc


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(moves, min_size=1, max_size=14))
def test_any_sequence_of_moves_and_faults_keeps_the_books_balanced_and_exact(
    runner: asyncio.Runner, database: Database, owner: psycopg.Connection, plan: list[Move]
) -> None:
    tenant = uuid.uuid4()
    model = runner.run(_play(database, owner, tenant, plan))

    async def balances() -> dict[tuple[str, str], int]:
        async with database.tenant_session(tenant) as session:
            return {(b.account, b.currency): b.net for b in await LEDGER.balances(session)}

    found = runner.run(balances())
    assert {key: net for key, net in found.items() if net} == {
        key: net for key, net in model.net.items() if net
    }
    report = verify_book(owner, tenant)
    assert report.problems == []
    assert report.entries == len(model.entries)
    assert all(total == 0 for total in report.trial_balance.values())
    for payment in PAYMENTS:
        for currency in ("EUR", "USD"):
            assert model.held(payment, currency) >= 0
