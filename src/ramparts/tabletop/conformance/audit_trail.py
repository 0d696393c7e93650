"""AZ-4, the audit trail: append-only under the API (the runtime role may change no audit row;
enabled triggers refuse UPDATE, DELETE and TRUNCATE even to the owner, who is tried in a
transaction that is rolled back), each tenant's chain verified through the API with its signed
checkpoints, and personal data a person sends redacted before it is written (read back)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import psycopg

from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.people import admin_of, first_of_each_role_set, tenant_id
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, DrillError, Target
from ramparts.web.app import CHECKPOINT_SECONDS

__all__ = ["check"]

#: The trail's tables whose rows never change or go (migration 0006's APPEND_ONLY); the
#: queue's rows are moved into the chain by the sequencer, so only UPDATE and TRUNCATE are
#: refused there.
APPEND_ONLY = ("audit_chains", "audit_events", "audit_checkpoints", "audit_signing_keys")
QUEUE = "audit_queue"
#: pg_trigger.tgtype bits (PostgreSQL's trigger.h).
_DELETE, _UPDATE, _TRUNCATE = 8, 16, 32
#: How late the server's periodic checkpoint may be before its absence is a failure.
CHECKPOINT_GRACE = 120
_ENABLED = {"O", "A"}  # fires in ordinary sessions (origin) or always; 'D' is disabled
#: A valid IBAN, a phone number and a fresh e-mail address: what a person might type.
_IBAN = "DE89370400440532013000"
_PHONE = "+44 20 7946 0958"


def check(target: Target) -> Outcome:
    f = Findings(
        "the runtime role can change no audit row; enabled triggers refuse UPDATE, DELETE and "
        "TRUNCATE (an owner's UPDATE is refused); each tenant's hash chain verifies with its "
        "signed checkpoints; personal data sent to the assistant is redacted in the trail"
    )
    if target.urls is None:
        raise DrillError("the instance's database is not reachable: the trail under the API")
    role = str(target.urls.app.username)
    _grants(f, target, role)
    _triggers(f, target)
    _owner_refused(f, target)
    with f.part("the chains' verification"):
        _verified(f, target)
    with f.part("the redaction of personal data"):
        _redacted(f, target)
    return f.outcome(
        f"{role} holds no UPDATE/DELETE/TRUNCATE on the trail; enabled triggers refused the "
        "owner's UPDATE and DELETE; the chains verify; the personal data sent was redacted"
    )


def _tables() -> tuple[str, ...]:
    return (*APPEND_ONLY, QUEUE)


def _grants(f: Findings, target: Target, role: str) -> None:
    held: dict[str, list[str]] = {}
    with target.owner() as db:
        for table in _tables():
            held[table] = [
                right
                for right in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
                if _granted(db, role, table, right)
            ]
    changing = {t: r for t, r in held.items() if {"UPDATE", "DELETE", "TRUNCATE"} & set(r)}
    f.expect(
        not changing,
        f"{role} on the trail: "
        + ", ".join(f"{t} {'+'.join(r) or 'nothing'}" for t, r in held.items())
        + " (events are queued through audit_enqueue())",
        f"{role} may change audit rows: {changing}",
    )


def _granted(db: psycopg.Connection[Any], role: str, table: str, right: str) -> bool:
    row = db.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, right)).fetchone()
    return bool(row and row[0])


def _triggers(f: Findings, target: Target) -> None:
    missing = []
    with target.owner() as db:
        for table in _tables():
            rows = db.execute(
                "SELECT tgname, tgtype, tgenabled FROM pg_trigger "
                "WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal",
                (table,),
            ).fetchall()
            enabled = [(str(name), int(kind)) for name, kind, on in rows if str(on) in _ENABLED]
            disabled = [str(name) for name, _, on in rows if str(on) not in _ENABLED]
            wanted = {"UPDATE": _UPDATE, "TRUNCATE": _TRUNCATE}
            if table != QUEUE:
                wanted["DELETE"] = _DELETE
            for verb, bit in wanted.items():
                if not any(kind & bit for _, kind in enabled):
                    missing.append(f"{table}: no enabled trigger refuses {verb}")
            if disabled:
                missing.append(f"{table}: trigger {', '.join(disabled)} disabled")
    f.expect(
        not missing,
        f"{len(_tables())} audit tables: enabled triggers refuse UPDATE and TRUNCATE, and "
        "DELETE on all but the queue",
        "; ".join(missing),
    )


def _owner_refused(f: Findings, target: Target) -> None:
    tenant = tenant_id(target, target.tenants()[0])
    outcomes = {}
    with target.owner() as db, rolled_back(db):
        as_tenant(db, tenant)
        row = db.execute(
            "SELECT seq FROM audit_events WHERE tenant_id = %s ORDER BY seq LIMIT 1", (tenant,)
        ).fetchone()
        if row is None:
            raise DrillError("the trail holds no event of the tenant to try to change")
        for verb, statement in (
            ("UPDATE", "UPDATE audit_events SET body = body WHERE tenant_id = %s AND seq = %s"),
            ("DELETE", "DELETE FROM audit_events WHERE tenant_id = %s AND seq = %s"),
        ):
            try:
                with db.transaction():
                    changed = db.execute(statement, (tenant, row[0])).rowcount
                outcomes[verb] = f"went through ({changed} row, rolled back)"
            except psycopg.Error as exc:
                outcomes[verb] = f"refused: {str(exc).splitlines()[0][:80]}"
    f.expect(
        all(o.startswith("refused") for o in outcomes.values()),
        "the owner, on event #"
        + str(row[0])
        + ": "
        + "; ".join(f"{verb} {how}" for verb, how in outcomes.items()),
        "the owner changed an audit event: the append-only triggers did not stop it",
    )


def _verified(f: Findings, target: Target) -> None:
    """Each tenant's chain verified by the instance (hashes, links, signed checkpoints); a
    chain older than the server's checkpoint interval must have a signed checkpoint."""
    for tenant in target.tenants():
        admin = target.session(admin_of(target, tenant))
        answer = admin.get("/api/audit/verification")
        if answer.status_code != 200:
            raise DrillError(f"GET /api/audit/verification answered {answer.status_code}")
        report = answer.json()
        f.expect(
            report.get("ok") is True and not report.get("problems"),
            f"{tenant}: GET /api/audit/verification → ok {report.get('ok')}, "
            f"{report.get('events')} events, head #{report.get('head_seq')}",
            f"{tenant}'s chain does not verify: {report.get('problems')}",
        )
        signed = (report.get("checkpoint") or {}).get("count") or 0
        age = _chain_age(admin)
        due = age > CHECKPOINT_SECONDS + CHECKPOINT_GRACE
        f.expect(
            bool(signed) or not due,
            f"{tenant}: {signed} signed checkpoint(s) verified, up to "
            f"#{(report.get('checkpoint') or {}).get('seq')}"
            if signed
            else f"{tenant}: no signed checkpoint yet; the chain is {age:.0f} s old and the "
            f"server signs every {CHECKPOINT_SECONDS} s (not proven on this young instance)",
            f"{tenant}'s chain is {age:.0f} s old and has no signed checkpoint",
        )


def _chain_age(admin: ApiSession) -> float:
    """Seconds since the first event of the admin's tenant's chain."""
    answer = admin.get("/api/audit/events", params={"limit": 1})
    items = answer.json().get("items", []) if answer.status_code == 200 else []
    if not items:
        return 0.0
    first = datetime.fromisoformat(str(items[0]["time"]).replace("Z", "+00:00"))
    return (datetime.now(UTC) - first).total_seconds()


def _redacted(f: Findings, target: Target) -> None:
    tenant = target.tenants()[0]
    email = f"drill.{secrets.token_hex(4)}@example.org"
    raw = (email, _IBAN, _PHONE)
    admin = target.session(admin_of(target, tenant))
    person = next(u for u, _ in first_of_each_role_set(target, tenant) if u != admin.username)
    started = now()
    if target.script is not None:
        target.script.play([{"text": "noted"}])
    sent = target.session(person).assistant(
        f"Please note my contact: {email}, phone {_PHONE}, and refund to IBAN {_IBAN}."
    )
    f.saw(
        f"{person} sent the assistant an e-mail address, a phone number and an IBAN "
        f"→ {sent.status_code}"
    )
    # An auditor's search names the address too: what a person typed, written to the trail.
    admin.get("/api/audit/events", params={"actor": email, "limit": 1})
    events = audit_events(admin, since=started)
    bodies = [str(e) for e in events]
    in_clear = sum(1 for body in bodies if any(value in body for value in raw))
    searches = [
        e for e in events if str((e.get("details") or {}).get("actor", "")).startswith("[EMAIL")
    ]
    f.expect(
        in_clear == 0 and bool(searches),
        f"{len(events)} events since, none holds the values in clear; the search's filter "
        f"stored as {(searches[0]['details']['actor'] if searches else None)} "
        + (f"({cited(searches[:1])[0]})" if searches else ""),
        f"{in_clear} audit events hold the personal data in clear"
        if in_clear
        else "the search's filter is not in the trail, redacted",
    )
    with target.owner() as db, rolled_back(db):
        as_tenant(db, tenant_id(target, tenant))
        stored = db.execute(
            "SELECT (SELECT count(*) FROM audit_events WHERE tenant_id = %s AND "
            "(strpos(body, %s) > 0 OR strpos(body, %s) > 0 OR strpos(body, %s) > 0)), "
            "(SELECT count(*) FROM ai_messages WHERE tenant_id = %s AND "
            "(strpos(content, %s) > 0 OR strpos(content, %s) > 0 OR strpos(content, %s) > 0))",
            (tenant_id(target, tenant), *raw, tenant_id(target, tenant), *raw),
        ).fetchone()
    events_raw, messages_raw = stored if stored else (0, 0)
    f.expect(
        events_raw == 0 and messages_raw == 0,
        f"in the database: {events_raw} audit rows and {messages_raw} stored prompts hold "
        "the values in clear",
        "personal data is stored in clear",
    )
