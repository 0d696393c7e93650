"""The database itself keeps the ledger balanced and append-only (migration 0020_ledger), for
the runtime role and for the owner, whatever SQL they write: these tests bypass the service."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from ramparts.config import APP_ROLE
from ramparts.db.engine import DatabaseUrls, libpq

TENANT_OF = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"


@pytest.fixture
def app_conn(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(urls.app), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        yield conn


@pytest.fixture
def owner_conn(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    """The owner (a superuser here: row-level security does not hold it back)."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        yield conn


def _as(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))


def _accounts(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    for name, currency, kind in [
        ("cash", "EUR", "asset"),
        ("income", "EUR", "revenue"),
        ("cash", "USD", "asset"),
    ]:
        conn.execute(
            "INSERT INTO ledger_accounts (tenant_id, name, currency, kind) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (tenant, name, currency, kind),
        )


def _entry(
    conn: psycopg.Connection,
    tenant: uuid.UUID,
    postings: list[tuple[str, str, int]],
    *,
    kind: str = "deposit",
    reverses: uuid.UUID | None = None,
) -> uuid.UUID:
    """An entry and its postings, written with plain INSERTs in the open transaction."""
    entry = uuid.uuid4()
    conn.execute(
        "INSERT INTO ledger_entries (tenant_id, id, kind, reference, reverses) "
        "VALUES (%s, %s, %s, %s, %s)",
        (tenant, entry, kind, f"ref_{entry.hex}", reverses),
    )
    for position, (account, currency, amount) in enumerate(postings, 1):
        conn.execute(
            "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, "
            "amount) VALUES (%s, %s, %s, %s, %s, %s)",
            (tenant, entry, position, account, currency, amount),
        )
    return entry


def _posted(conn: psycopg.Connection, tenant: uuid.UUID) -> uuid.UUID:
    """A committed, balanced entry of `tenant`."""
    with conn.transaction():
        _as(conn, tenant)
        _accounts(conn, tenant)
        return _entry(conn, tenant, [("cash", "EUR", 100), ("income", "EUR", -100)])


def _count(conn: psycopg.Connection, tenant: uuid.UUID) -> int:
    with conn.transaction():
        _as(conn, tenant)
        row = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    return row[0] if row else -1


@pytest.mark.parametrize("who", ["app_conn", "owner_conn"])
@pytest.mark.parametrize(
    "postings",
    [
        [("cash", "EUR", 100), ("income", "EUR", -99)],
        [("cash", "EUR", 100)],
        [],
        [("cash", "EUR", 100), ("cash", "USD", -100)],
        [("cash", "EUR", 100), ("income", "EUR", -100), ("cash", "USD", 5)],
    ],
    ids=["off-by-one", "one-posting", "no-posting", "across-currencies", "one-currency-off"],
)
def test_an_unbalanced_entry_is_refused_at_commit(
    request: pytest.FixtureRequest, who: str, postings: list[tuple[str, str, int]]
) -> None:
    conn: psycopg.Connection = request.getfixturevalue(who)
    tenant = uuid.uuid4()
    with pytest.raises(errors.CheckViolation, match="ledger entry") as refused, conn.transaction():  # noqa: PT012
        _as(conn, tenant)
        _accounts(conn, tenant)
        _entry(conn, tenant, postings)  # deferred: each INSERT alone is accepted
    assert refused.value.diag.constraint_name == "ledger_entry_balanced"
    assert _count(conn, tenant) == 0


def test_checking_at_once_refuses_an_entry_before_its_postings(
    app_conn: psycopg.Connection,
) -> None:
    """SET CONSTRAINTS ... IMMEDIATE cannot switch the check off, only make it earlier."""
    tenant = uuid.uuid4()
    with pytest.raises(errors.CheckViolation, match="0 posting"), app_conn.transaction():  # noqa: PT012
        app_conn.execute("SET CONSTRAINTS ledger_entry_balanced IMMEDIATE")
        _as(app_conn, tenant)
        _accounts(app_conn, tenant)
        _entry(app_conn, tenant, [("cash", "EUR", 100), ("income", "EUR", -100)])


@pytest.mark.parametrize("who", ["app_conn", "owner_conn"])
def test_a_posting_after_an_early_check_is_checked_again(
    request: pytest.FixtureRequest, who: str
) -> None:
    """Checking at once, then adding a posting: the posting brings its own check at COMMIT."""
    conn: psycopg.Connection = request.getfixturevalue(who)
    tenant = uuid.uuid4()
    with pytest.raises(errors.CheckViolation, match="does not balance"), conn.transaction():  # noqa: PT012
        _as(conn, tenant)
        _accounts(conn, tenant)
        entry = _entry(conn, tenant, [("cash", "EUR", 100), ("income", "EUR", -100)])
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the entry's check runs, and passes
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute(
            "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, "
            "amount) VALUES (%s, %s, 3, 'cash', 'EUR', -1000000)",
            (tenant, entry),
        )
    assert _count(conn, tenant) == 0


class _RollBackError(Exception):
    """Leaves a savepoint by rolling it back."""


def _roll_back() -> None:
    raise _RollBackError


def _second_posting_in_savepoint(
    conn: psycopg.Connection, tenant: uuid.UUID, *, keep: bool
) -> None:
    """An entry whose first posting is in the transaction, its second in a savepoint."""
    with conn.transaction():
        _as(conn, tenant)
        _accounts(conn, tenant)
        entry = _entry(conn, tenant, [("cash", "EUR", 100)])
        try:
            # The savepoint has its own transaction id; the posting still joins the entry,
            # which belongs to the top-level transaction.
            with conn.transaction():
                conn.execute(
                    "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, "
                    "currency, amount) VALUES (%s, %s, 2, 'income', 'EUR', -100)",
                    (tenant, entry),
                )
                if not keep:
                    _roll_back()
        except _RollBackError:
            pass


def test_a_posting_in_a_savepoint_counts_only_if_the_savepoint_stays(
    app_conn: psycopg.Connection,
) -> None:
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    _second_posting_in_savepoint(app_conn, kept, keep=True)
    assert _count(app_conn, kept) == 1
    with pytest.raises(errors.CheckViolation, match="1 posting"):
        _second_posting_in_savepoint(app_conn, dropped, keep=False)
    assert _count(app_conn, dropped) == 0


def test_a_posting_cannot_join_an_entry_of_an_earlier_transaction(
    app_conn: psycopg.Connection, owner_conn: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    entry = _posted(app_conn, tenant)
    for conn in (app_conn, owner_conn):
        # Even a balanced pair: it would rewrite what the entry said when it was posted.
        with pytest.raises(errors.CheckViolation, match="closed") as refused, conn.transaction():  # noqa: PT012
            _as(conn, tenant)
            for position, amount in ((3, 50), (4, -50)):
                conn.execute(
                    "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, "
                    "currency, amount) VALUES (%s, %s, %s, 'cash', 'EUR', %s)",
                    (tenant, entry, position, amount),
                )
        assert refused.value.diag.constraint_name == "ledger_entry_closed"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_postings SET amount = amount * 2 WHERE tenant_id = %(t)s",
        "DELETE FROM ledger_postings WHERE tenant_id = %(t)s",
        "UPDATE ledger_entries SET reference = 'other' WHERE tenant_id = %(t)s",
        "DELETE FROM ledger_entries WHERE tenant_id = %(t)s",
        "UPDATE ledger_accounts SET kind = 'expense' WHERE tenant_id = %(t)s",
        "DELETE FROM ledger_accounts WHERE tenant_id = %(t)s",
        "UPDATE ledger_books SET opened_at = now() WHERE tenant = %(t)s",
        "DELETE FROM ledger_books WHERE tenant = %(t)s",
        "TRUNCATE ledger_postings",
        "TRUNCATE ledger_entries CASCADE",
        "TRUNCATE ledger_accounts CASCADE",
        "TRUNCATE ledger_books",
    ],
)
def test_nothing_posted_can_change_for_any_role(
    app_conn: psycopg.Connection, owner_conn: psycopg.Connection, statement: str
) -> None:
    tenant = uuid.uuid4()
    _posted(app_conn, tenant)
    # The runtime role holds no such privilege at all.
    with (  # noqa: PT012
        pytest.raises(errors.InsufficientPrivilege, match="permission denied"),
        app_conn.transaction(),
    ):
        _as(app_conn, tenant)
        app_conn.execute(statement, {"t": tenant})
    # The owner (a superuser) holds every privilege; the triggers still refuse.
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"), owner_conn.transaction():  # noqa: PT012
        _as(owner_conn, tenant)
        owner_conn.execute(statement, {"t": tenant})
    assert _count(app_conn, tenant) == 1


def test_a_posting_must_be_in_its_accounts_currency(app_conn: psycopg.Connection) -> None:
    tenant = uuid.uuid4()
    with pytest.raises(errors.ForeignKeyViolation), app_conn.transaction():  # noqa: PT012
        _as(app_conn, tenant)
        _accounts(app_conn, tenant)  # `income` exists in EUR only
        _entry(app_conn, tenant, [("cash", "USD", 100), ("income", "USD", -100)])


def test_a_reversal_must_mirror_its_entry(app_conn: psycopg.Connection) -> None:
    tenant = uuid.uuid4()
    original = _posted(app_conn, tenant)
    with pytest.raises(errors.CheckViolation, match="mirror") as refused, app_conn.transaction():  # noqa: PT012
        _as(app_conn, tenant)
        _entry(
            app_conn,
            tenant,
            [("cash", "EUR", -60), ("income", "EUR", 60)],
            kind="reversal",
            reverses=original,
        )
    assert refused.value.diag.constraint_name == "ledger_reversal_mirrors"
    with app_conn.transaction():
        _as(app_conn, tenant)
        reversal = _entry(
            app_conn,
            tenant,
            [("income", "EUR", 100), ("cash", "EUR", -100)],
            kind="reversal",
            reverses=original,
        )
    # A reversal is not reversed again (post the entry anew instead), nor an entry twice.
    for reverses in (reversal, original):
        with pytest.raises((errors.CheckViolation, errors.UniqueViolation)), app_conn.transaction():  # noqa: PT012
            _as(app_conn, tenant)
            _entry(
                app_conn,
                tenant,
                [("cash", "EUR", 100), ("income", "EUR", -100)],
                kind="reversal",
                reverses=reverses,
            )
    assert _count(app_conn, tenant) == 2


def test_the_stamp_is_the_databases(app_conn: psycopg.Connection) -> None:
    """A writer cannot date an entry or claim another transaction for it."""
    tenant = uuid.uuid4()
    with app_conn.transaction():
        _as(app_conn, tenant)
        _accounts(app_conn, tenant)
        app_conn.execute(
            "INSERT INTO ledger_entries (tenant_id, id, kind, reference, posted_at, xact) "
            "VALUES (%s, %s, 'deposit', 'ch_dated', '2001-01-01', '1')",
            (tenant, entry := uuid.uuid4()),
        )
        for position, amount in ((1, 10), (2, -10)):
            app_conn.execute(
                "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, "
                "currency, amount) VALUES (%s, %s, %s, 'cash', 'EUR', %s)",
                (tenant, entry, position, amount),
            )
        row = app_conn.execute(
            "SELECT posted_at > now() - interval '1 minute', xact = pg_current_xact_id() "
            "FROM ledger_entries WHERE id = %s",
            (entry,),
        ).fetchone()
    assert row == (True, True)


def test_row_level_security_keeps_books_apart(app_conn: psycopg.Connection) -> None:
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    _posted(app_conn, mine)
    with app_conn.transaction():
        _as(app_conn, theirs)
        for table in ("ledger_entries", "ledger_postings", "ledger_accounts"):
            assert app_conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    with (  # noqa: PT012
        pytest.raises(errors.InsufficientPrivilege, match="row-level security"),
        app_conn.transaction(),
    ):
        _as(app_conn, theirs)
        _entry(app_conn, mine, [("cash", "EUR", 1), ("income", "EUR", -1)])
    with pytest.raises(errors.InsufficientPrivilege), app_conn.transaction():
        app_conn.execute("SELECT count(*) FROM ledger_books")
