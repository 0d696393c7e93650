"""`ramparts ledger verify`, run as an operator runs it: intact books pass (exit 0); each kind
of damage that got past the database's guards is found and located (exit 1)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments.ledger import Ledger
from ramparts.payments.ledger_verify import guard_problems
from tests.test_cli import owner_env, run


async def _post_life(urls: DatabaseUrls, tenant: uuid.UUID) -> uuid.UUID:
    """A deposit, its fee and a refund on `tenant`'s book; the fee entry's id."""
    database = Database(urls.app, pool_size=1)
    ledger = Ledger()
    try:
        async with database.tenant_session(tenant) as session:
            await ledger.record_deposit(session, payment="pi_v", amount=5_000, currency="EUR")
            fee = await ledger.record_psp_fee(
                session, payment="pi_v", reference="txn_v", amount=90, currency="EUR"
            )
            await ledger.record_refund(
                session, payment="pi_v", refund="re_v", amount=1_000, currency="EUR"
            )
    finally:
        await database.dispose()
    return fee.id


def _tamper(urls: DatabaseUrls, statement: str, *arguments: object) -> None:
    """What only a superuser with the triggers switched off can do."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner, owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        owner.execute(statement, arguments)


def _verify(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    done = run("ledger", "verify", "--json", env=env)
    assert done.stderr == ""
    return done.returncode, json.loads(done.stdout)


def test_verify_passes_intact_books_and_locates_each_kind_of_damage(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    assert _verify(env) == (
        0,
        {"intact": True, "guards": [], "books": [], "every_book_found": True},
    )

    tenant, other = uuid.uuid4(), uuid.uuid4()
    fee = asyncio.run(_post_life(urls, tenant))
    asyncio.run(_post_life(urls, other))
    code, report = _verify(env)
    assert code == 0
    books = {book["tenant"]: book for book in report["books"]}  # type: ignore[attr-defined]
    assert books[str(tenant)] == {
        "tenant": str(tenant),
        "intact": True,
        "entries": 3,
        "postings": 6,
        "accounts": 3,
        "trial_balance": {"EUR": 0},
        "problems": [],
    }
    people = run("ledger", "verify", env=env)
    assert people.returncode == 0
    assert "2 book(s), guards in place: intact" in people.stdout

    # A posting doubled, one added to a closed entry, money taken out of held funds.
    _tamper(
        urls,
        "UPDATE ledger_postings SET amount = 180 WHERE entry_id = %s AND position = 1",
        fee,
    )
    _tamper(
        urls,
        "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, amount)"
        " SELECT tenant_id, entry_id, 3, 'held_funds:pi_v', 'EUR', 9000 FROM ledger_postings"
        " WHERE entry_id = %s AND position = 1",
        fee,
    )
    code, report = _verify(env)
    assert code == 1
    assert report["intact"] is False
    books = {book["tenant"]: book for book in report["books"]}  # type: ignore[attr-defined]
    assert books[str(other)]["intact"] is True  # the other book is untouched
    damaged = books[str(tenant)]
    assert damaged["trial_balance"] == {"EUR": 9090}
    found = {(p["kind"], p.get("entry"), p.get("account")) for p in damaged["problems"]}
    assert found == {
        ("trial_balance", None, None),
        ("unbalanced", str(fee), None),
        ("negative_balance", None, "held_funds:pi_v EUR"),
    }
    unbalanced = next(p for p in damaged["problems"] if p["kind"] == "unbalanced")
    assert unbalanced["message"] == "off by EUR 9090"


def test_verify_finds_a_switched_off_guard_and_a_broken_reversal(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    tenant = uuid.uuid4()
    fee = asyncio.run(_post_life(urls, tenant))

    async def reverse() -> uuid.UUID:
        database = Database(urls.app, pool_size=1)
        try:
            async with database.tenant_session(tenant) as session:
                return (await Ledger().reverse(session, fee, reference="fix:txn_v")).id
        finally:
            await database.dispose()

    reversal = asyncio.run(reverse())
    assert _verify(env)[0] == 0
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute("ALTER TABLE ledger_postings DISABLE TRIGGER ledger_postings_append_only")
        owner.execute("DROP TRIGGER ledger_entries_no_truncate ON ledger_entries")
        # With the guard off, the owner rewrites a reversal, keeping it balanced.
        owner.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        owner.execute(
            "UPDATE ledger_postings SET amount = amount / 2 WHERE entry_id = %s", (reversal,)
        )
    code, report = _verify(env)
    assert code == 1
    assert report["guards"] == [
        {
            "kind": "guard_disabled",
            "message": "trigger ledger_postings_append_only on ledger_postings is not enabled",
        },
        {
            "kind": "guard_missing",
            "message": "trigger ledger_entries_no_truncate on ledger_entries is gone",
        },
    ]
    [book] = report["books"]  # type: ignore[misc]
    assert book["problems"] == [
        {"kind": "bad_reversal", "message": f"does not mirror entry {fee}", "entry": str(reversal)}
    ]


def test_the_pinned_guard_digests_are_those_of_a_fresh_migration(urls: DatabaseUrls) -> None:
    """Changing a guard's function means reviewing it: its digest is pinned in the code."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        assert guard_problems(owner) == []


def test_verify_finds_a_rewritten_guard_and_a_book_written_with_triggers_off(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    asyncio.run(_post_life(urls, uuid.uuid4()))
    assert _verify(env)[0] == 0
    hidden = uuid.uuid4()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        # The trigger stays, enabled and deferred; its function now lets anything through.
        owner.execute(
            "CREATE OR REPLACE FUNCTION ledger_check_posting() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$"
        )
        with owner.transaction():
            owner.execute("SET LOCAL session_replication_role = replica")
            owner.execute(
                "INSERT INTO ledger_entries (tenant_id, id, kind, reference, payment, posted_at) "
                "VALUES (%s, gen_random_uuid(), 'deposit', 'ch_hidden', 'pi_h', now())",
                (hidden,),
            )
    code, report = _verify(env)
    assert code == 1
    assert report["every_book_found"] is True  # the test server's owner is a superuser
    assert {"kind": "guard_changed", "message": "function ledger_check_posting is not the "
            "reviewed one"} in report["guards"]  # fmt: skip
    assert {
        "kind": "unlisted_book",
        "message": f"tenant {hidden} has ledger rows but no book",
    } in report["guards"]
