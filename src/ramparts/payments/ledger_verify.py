"""`ramparts ledger verify`: every entry and balance checked again, from the rows alone.

The database refuses an unbalanced or changed entry as it is written (migration 0020_ledger);
this finds what got past anyway: a superuser who switched triggers off, an owner who dropped
or disabled a guard, a restore from a tampered backup. It runs as the owner, one tenant's book
at a time under that tenant's row-level security (every query also names the tenant, as a
superuser owner sees every row whatever the setting says).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

__all__ = [
    "GUARDS",
    "GUARD_FUNCTIONS",
    "BookReport",
    "LedgerProblem",
    "guard_problems",
    "ledger_books",
    "unlisted_books",
    "verify_book",
]

#: The triggers that keep the ledger balanced and append-only, per table; each must be there
#: and enabled (`O`: fires in the normal replication role).
TABLES = ("ledger_books", "ledger_accounts", "ledger_entries", "ledger_postings")
GUARDS: dict[str, str] = {
    **{f"{table}_append_only": table for table in TABLES},
    **{f"{table}_no_truncate": table for table in TABLES},
    "ledger_entries_stamp": "ledger_entries",
    "ledger_entry_balanced": "ledger_entries",
    "ledger_postings_open_entry": "ledger_postings",
    "ledger_posting_balanced": "ledger_postings",
}
#: The function each guard trigger must run (by name) and the functions they call, with the
#: SHA-256 of what PostgreSQL runs for each: its source, whether it runs as its owner, and
#: its settings (a rewritten body, or a `search_path` pointed elsewhere, changes it). Pinned
#: from migration 0020; `tests/payments/test_ledger_verify.py` checks them against a freshly
#: migrated database, so changing a guard means reviewing its new digest here.
GUARD_TRIGGER_FUNCTIONS: dict[str, str] = {
    **{f"{table}_append_only": "ledger_refuse_change" for table in TABLES},
    **{f"{table}_no_truncate": "ledger_refuse_change" for table in TABLES},
    "ledger_entries_stamp": "ledger_stamp_entry",
    "ledger_entry_balanced": "ledger_check_entry",
    "ledger_postings_open_entry": "ledger_posting_joins_open_entry",
    "ledger_posting_balanced": "ledger_check_posting",
}
# Digests of public SQL, not secrets: each digest's line says so to the secret scanner.
_PINNED = (
    "ledger_assert_entry",
    "d212ed1025027424918f582263ac97a7371c665f8c73756a70cc7436d4e25321",  # pragma: allowlist secret
    "ledger_check_entry",
    "f9f4852f4b91af6f833d5a713a932feb7d571d0cc4592e25e30beac3a0d6e683",  # pragma: allowlist secret
    "ledger_check_posting",
    "449d749acf22e5c08357eaaa35f479a0809eaef3d3e3d35baf1c5876637c4b8f",  # pragma: allowlist secret
    "ledger_posting_joins_open_entry",
    "b0f9e425104128f2bac66c0b38942e44c28c80cf504b7ae0f375fd5b907dec55",  # pragma: allowlist secret
    "ledger_refuse_change",
    "6d339e6e6a519fa48c629b289749e8bd6b4520a0de06b97a2a91693e7be1ffcd",  # pragma: allowlist secret
    "ledger_stamp_entry",
    "3dd9f85c13159ecd918a2c32a27b23e0b28707a441bed58a36f35923527c8d54",  # pragma: allowlist secret
)
GUARD_FUNCTIONS: dict[str, str] = dict(zip(_PINNED[::2], _PINNED[1::2], strict=True))
_FUNCTION_DIGESTS = """
SELECT p.proname, encode(sha256(convert_to(
    p.prosrc || '|' || p.prosecdef::text || '|' || coalesce(array_to_string(p.proconfig, ','), ''),
    'UTF8')), 'hex')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proname = ANY(%s)
"""


@dataclass(frozen=True)
class LedgerProblem:
    kind: str
    message: str
    entry: str | None = None
    account: str | None = None

    def as_json(self) -> dict[str, Any]:
        found = {"kind": self.kind, "message": self.message}
        if self.entry is not None:
            found["entry"] = self.entry
        if self.account is not None:
            found["account"] = self.account
        return found


@dataclass
class BookReport:
    tenant: str
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    #: Per currency, the sum of every posting (zero in a balanced book).
    trial_balance: dict[str, int] = field(default_factory=dict)
    problems: list[LedgerProblem] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "intact": self.intact,
            "entries": self.entries,
            "postings": self.postings,
            "accounts": self.accounts,
            "trial_balance": self.trial_balance,
            "problems": [problem.as_json() for problem in self.problems],
        }


def guard_problems(conn: psycopg.Connection) -> list[LedgerProblem]:
    """A problem per guard trigger that is missing, disabled or no longer deferred."""
    rows = conn.execute(
        "SELECT t.tgname, c.relname, t.tgenabled, t.tgdeferrable AND t.tginitdeferred, "
        "p.proname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE NOT t.tgisinternal AND c.relname = ANY(%s)",
        (list(TABLES),),
    ).fetchall()
    found = {
        (name, table): (enabled, deferred, runs) for name, table, enabled, deferred, runs in rows
    }
    problems = []
    for name, table in GUARDS.items():
        state = found.get((name, table))
        if state is None:
            problems.append(LedgerProblem("guard_missing", f"trigger {name} on {table} is gone"))
        elif state[0] != "O":
            problems.append(
                LedgerProblem("guard_disabled", f"trigger {name} on {table} is not enabled")
            )
        elif name in {"ledger_entry_balanced", "ledger_posting_balanced"} and not state[1]:
            problems.append(
                LedgerProblem("guard_disabled", f"trigger {name} is no longer deferred")
            )
        elif state[2] != GUARD_TRIGGER_FUNCTIONS[name]:
            problems.append(
                LedgerProblem(
                    "guard_changed",
                    f"trigger {name} runs {state[2]}, not {GUARD_TRIGGER_FUNCTIONS[name]}",
                )
            )
    digests: dict[str, str] = dict(
        conn.execute(_FUNCTION_DIGESTS, (list(GUARD_FUNCTIONS),)).fetchall()
    )
    for function, expected in GUARD_FUNCTIONS.items():
        digest = digests.get(function)
        if digest is None:
            problems.append(LedgerProblem("guard_missing", f"function {function} is gone"))
        elif digest != expected:
            problems.append(
                LedgerProblem("guard_changed", f"function {function} is not the reviewed one")
            )
    return problems


def ledger_books(conn: psycopg.Connection) -> list[uuid.UUID]:
    """Every tenant that ever posted (`ledger_books` has no row-level security)."""
    return [row[0] for row in conn.execute("SELECT tenant FROM ledger_books ORDER BY tenant")]


def unlisted_books(conn: psycopg.Connection) -> list[LedgerProblem] | None:
    """A problem per tenant with ledger rows but no `ledger_books` row (written with the
    triggers off, which is what fills it): the per-book checks would never see them. None
    when the verifying role is held to row-level security and so cannot see every row."""
    sees_all = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not sees_all or not sees_all[0]:
        return None
    rows = conn.execute(
        "SELECT tenant_id FROM (SELECT tenant_id FROM ledger_entries UNION "
        "SELECT tenant_id FROM ledger_postings UNION SELECT tenant_id FROM ledger_accounts) t "
        "WHERE NOT EXISTS (SELECT 1 FROM ledger_books b WHERE b.tenant = t.tenant_id) "
        "ORDER BY tenant_id"
    ).fetchall()
    return [
        LedgerProblem("unlisted_book", f"tenant {tenant} has ledger rows but no book")
        for (tenant,) in rows
    ]


# Each check: (problem kind, query naming the tenant as %(tenant)s, message from the row).
_ORPHANS = """
SELECT p.entry_id::text, NULL FROM ledger_postings p
WHERE p.tenant_id = %(tenant)s AND NOT EXISTS (
    SELECT 1 FROM ledger_entries e WHERE e.tenant_id = p.tenant_id AND e.id = p.entry_id)
GROUP BY p.entry_id
"""
_SHORT = """
SELECT e.id::text, count(p.position) FROM ledger_entries e
LEFT JOIN ledger_postings p ON p.tenant_id = e.tenant_id AND p.entry_id = e.id
WHERE e.tenant_id = %(tenant)s GROUP BY e.id HAVING count(p.position) < 2
"""
_UNBALANCED = """
SELECT p.entry_id::text, string_agg(p.currency || ' ' || p.total, ', ' ORDER BY p.currency)
FROM (SELECT entry_id, currency, sum(amount) AS total FROM ledger_postings
      WHERE tenant_id = %(tenant)s GROUP BY entry_id, currency HAVING sum(amount) <> 0) p
GROUP BY p.entry_id
"""
_NO_ACCOUNT = """
SELECT p.entry_id::text, p.account || ' ' || p.currency FROM ledger_postings p
WHERE p.tenant_id = %(tenant)s AND NOT EXISTS (
    SELECT 1 FROM ledger_accounts a WHERE a.tenant_id = p.tenant_id AND a.name = p.account
      AND a.currency = p.currency)
"""
_BAD_REVERSALS = """
SELECT r.id::text, r.reverses::text FROM ledger_entries r
WHERE r.tenant_id = %(tenant)s AND r.reverses IS NOT NULL AND (
    NOT EXISTS (SELECT 1 FROM ledger_entries o WHERE o.tenant_id = r.tenant_id
                AND o.id = r.reverses AND o.kind <> 'reversal')
    OR EXISTS (
        (SELECT account, currency, amount FROM ledger_postings
         WHERE tenant_id = r.tenant_id AND entry_id = r.id
         EXCEPT ALL SELECT account, currency, -amount FROM ledger_postings
         WHERE tenant_id = r.tenant_id AND entry_id = r.reverses)
        UNION ALL
        (SELECT account, currency, -amount FROM ledger_postings
         WHERE tenant_id = r.tenant_id AND entry_id = r.reverses
         EXCEPT ALL SELECT account, currency, amount FROM ledger_postings
         WHERE tenant_id = r.tenant_id AND entry_id = r.id)))
"""
_NEGATIVE = """
SELECT a.name || ' ' || a.currency,
       CASE WHEN a.kind IN ('asset', 'expense') THEN s.net ELSE -s.net END
FROM ledger_accounts a
JOIN (SELECT account, currency, sum(amount) AS net FROM ledger_postings
      WHERE tenant_id = %(tenant)s GROUP BY account, currency) s
    ON s.account = a.name AND s.currency = a.currency
WHERE a.tenant_id = %(tenant)s AND a.never_negative
  AND CASE WHEN a.kind IN ('asset', 'expense') THEN s.net ELSE -s.net END < 0
"""


def verify_book(conn: psycopg.Connection, tenant: uuid.UUID) -> BookReport:
    """Every check on one tenant's book, in one read-only transaction (one snapshot);
    `conn` is in autocommit mode, so the transaction is the block's own."""
    report = BookReport(tenant=str(tenant))
    arguments = {"tenant": tenant}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM ledger_entries WHERE tenant_id = %(tenant)s), "
            "(SELECT count(*) FROM ledger_postings WHERE tenant_id = %(tenant)s), "
            "(SELECT count(*) FROM ledger_accounts WHERE tenant_id = %(tenant)s)",
            arguments,
        ).fetchone()
        if counts is not None:
            report.entries, report.postings, report.accounts = counts
        report.trial_balance = {
            currency: int(total)
            for currency, total in conn.execute(
                "SELECT currency, sum(amount) FROM ledger_postings WHERE tenant_id = %(tenant)s "
                "GROUP BY currency ORDER BY currency",
                arguments,
            )
        }
        for currency, total in report.trial_balance.items():
            if total:
                report.problems.append(
                    LedgerProblem("trial_balance", f"the book's {currency} postings sum to {total}")
                )
        for entry, _ in conn.execute(_ORPHANS, arguments):
            report.problems.append(LedgerProblem("orphan_postings", "no such entry", entry=entry))
        for entry, count in conn.execute(_SHORT, arguments):
            report.problems.append(
                LedgerProblem("too_few_postings", f"{count} posting(s)", entry=entry)
            )
        for entry, off in conn.execute(_UNBALANCED, arguments):
            report.problems.append(LedgerProblem("unbalanced", f"off by {off}", entry=entry))
        for entry, account in conn.execute(_NO_ACCOUNT, arguments):
            report.problems.append(
                LedgerProblem("unknown_account", f"posts to {account}, not an account", entry)
            )
        for entry, reversed_entry in conn.execute(_BAD_REVERSALS, arguments):
            report.problems.append(
                LedgerProblem(
                    "bad_reversal", f"does not mirror entry {reversed_entry}", entry=entry
                )
            )
        for account, held in conn.execute(_NEGATIVE, arguments):
            report.problems.append(
                LedgerProblem("negative_balance", f"holds {held}", account=account)
            )
    return report
