"""AZ-4, the audit trail: append-only under the API (the runtime role may change no audit row;
enabled triggers refuse UPDATE, DELETE and TRUNCATE even to the owner, who is tried in a
transaction that is rolled back), each tenant's chain verified through the API with its signed
checkpoints, and personal data a person sends redacted before it is written (read back)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import psycopg

from ramparts.audit.events import Action
from ramparts.audit.verify import verify_chain
from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.forgery import read_jwt
from ramparts.tabletop.conformance.operating import operator_command, redacted_tail
from ramparts.tabletop.conformance.people import admin_of, first_of_each_role_set, tenant_id
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["check"]

#: The trail's tables whose rows never change or go (migration 0006's APPEND_ONLY); the
#: queue's rows are moved into the chain by the sequencer, so only UPDATE and TRUNCATE are
#: refused there.
APPEND_ONLY = ("audit_chains", "audit_events", "audit_checkpoints", "audit_signing_keys")
QUEUE = "audit_queue"
#: pg_trigger.tgtype bits (PostgreSQL's trigger.h).
_DELETE, _UPDATE, _TRUNCATE = 8, 16, 32
#: What an allowed event's body holds (its decision), for the tamper to turn into a refusal.
_ALLOWED = '"allow"'
_ENABLED = {"O", "A"}
#: A tool no one holds: the scripted model calls it, so the call is refused and recorded.
_PROBE_TOOL = "drill_probe"
#: The masking's placeholders for an e-mail address, an IBAN and a phone number.
_PLACEHOLDERS = (
    "[EMAIL",
    "[IBAN",
    "[PHONE",
)  # fires in ordinary sessions (origin) or always; 'D' is disabled
#: A valid IBAN, a phone number and a fresh e-mail address: what a person might type.
_IBAN = "DE89370400440532013000"
_PHONE = "+44 20 7946 0958"


def check(target: Target) -> Outcome:
    f = Findings(
        "the runtime role can change no audit row; enabled triggers refuse UPDATE, DELETE and "
        "TRUNCATE (an owner's UPDATE is refused); each tenant's hash chain verifies with a "
        "checkpoint the operator signs now; verification pinpoints a tampered event; the "
        "assistant's prompt, tool call and reply are recorded, personal data redacted"
    )
    if target.urls is None:
        raise DrillError("the instance's database is not reachable: the trail under the API")
    role = str(target.urls.app.username)
    _grants(f, target, role)
    _triggers(f, target)
    _owner_refused(f, target)
    with f.part("the chains' verification"):
        _verified(f, target)
    _tamper_found(f, target)
    with f.part("the redaction of personal data"):
        _redacted(f, target)
    return f.outcome(
        f"{role} holds no UPDATE/DELETE/TRUNCATE on the trail; enabled triggers refused the "
        "owner's UPDATE and DELETE; the chains verify with a fresh signed checkpoint; the "
        "tampered event was pinpointed; the exchange is recorded with the personal data redacted"
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
    """Each tenant's chain verified by the instance (hashes, links, signed checkpoints); the
    operator signs a checkpoint now (`ramparts audit checkpoint`, with the instance's KMS),
    and the instance then verifies it, covering every event the chain held before."""
    heads: dict[str, int] = {}
    for tenant in target.tenants():
        report = _verification(target, tenant)
        heads[tenant] = int(report.get("head_seq") or 0)
        f.expect(
            report.get("ok") is True and not report.get("problems"),
            f"{tenant}: GET /api/audit/verification → ok {report.get('ok')}, "
            f"{report.get('events')} events, head #{report.get('head_seq')}",
            f"{tenant}'s chain does not verify: {report.get('problems')}",
        )
    if not target.environment:
        f.unproven("signed checkpoints (the drill is not this instance's operator)")
        return
    signed = operator_command(target, "audit", "checkpoint", "--json")
    f.expect(
        signed.returncode == 0,
        f"operator: ramparts audit checkpoint → exit {signed.returncode}, "
        f"{len(signed.stdout.splitlines())} checkpoint(s) signed",
        f"the operator's checkpoint failed: {redacted_tail(signed.stderr)}",
    )
    for tenant in target.tenants():
        report = _verification(target, tenant)
        checkpoint = report.get("checkpoint") or {}
        count, seq = int(checkpoint.get("count") or 0), int(checkpoint.get("seq") or 0)
        f.expect(
            report.get("ok") is True and count > 0 and seq >= heads[tenant],
            f"{tenant}: {count} signed checkpoint(s) verified, the newest at #{seq} "
            f"(head was #{heads[tenant]})",
            f"{tenant}: no verified signed checkpoint covers the chain (ok {report.get('ok')}, "
            f"{count} checkpoint(s), newest #{seq}, head #{heads[tenant]})",
        )


def _verification(target: Target, tenant: str) -> dict[str, Any]:
    answer = target.session(admin_of(target, tenant)).get("/api/audit/verification")
    if answer.status_code != 200:
        raise DrillError(f"GET /api/audit/verification answered {answer.status_code}")
    report: dict[str, Any] = answer.json()
    return report


def _tamper_found(f: Findings, target: Target) -> None:
    """One event's body changed by the owner with the triggers off for that transaction (the
    power of someone holding the superuser password): the product's chain verification must
    name that event. The change is rolled back."""
    tenant = tenant_id(target, target.tenants()[0])
    with target.owner() as db, rolled_back(db):
        try:
            with db.transaction():
                db.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            f.unproven("a tampered row pinpointed (the owner may not switch triggers off)")
            return
        db.execute("SET LOCAL session_replication_role = replica")
        as_tenant(db, tenant)
        # An allowed act turned into a refused one: what a cover-up would write.
        row = db.execute(
            "SELECT seq FROM audit_events WHERE tenant_id = %s AND strpos(body, %s) > 0 "
            "ORDER BY seq OFFSET (SELECT count(*) / 2 FROM audit_events WHERE tenant_id = %s "
            "AND strpos(body, %s) > 0) LIMIT 1",
            (tenant, _ALLOWED, tenant, _ALLOWED),
        ).fetchone()
        if row is None:
            raise DrillError("the trail holds no allowed event of the tenant to tamper with")
        seq = int(row[0])
        changed = db.execute(
            "UPDATE audit_events SET body = replace(body, %s, %s) "
            "WHERE tenant_id = %s AND seq = %s",
            (_ALLOWED, '"deny"', tenant, seq),
        ).rowcount
        report = verify_chain(db, uuid.UUID(tenant), count_queued=False)
        located = sorted({p.seq for p in report.problems})
        kinds = sorted({p.kind for p in report.problems if p.seq == seq})
    f.expect(
        changed == 1 and not report.intact and located[:1] == [seq],
        f"event #{seq}'s body changed with the triggers off ({changed} row, rolled back): "
        f"verification → intact {report.intact}, first break at "
        f"#{located[0] if located else None} ({', '.join(kinds) or 'nothing found there'})",
        f"a tampered event #{seq} was not pinpointed (problems at {located})",
    )


def _exchange_recorded(f: Findings, admin: ApiSession, person: ApiSession, since: str) -> None:
    """The person's exchange is in the trail: its prompt with the personal data as
    placeholders, the tool call with its arguments, and the reply."""
    who = read_jwt(person.access_token)[1].get("sub")
    answered = [
        e
        for e in audit_events(admin, since=since, action="ai:*")
        if e.get("action") == Action.ASSISTANT_ANSWERED.value
        and (e.get("actor") or {}).get("id") == who
    ]
    details = answered[-1].get("details") or {} if answered else {}
    prompt = str(details.get("prompt", ""))
    calls = [a for a in details.get("actions", []) if a.get("tool") == _PROBE_TOOL]
    placeholders = [p for p in _PLACEHOLDERS if p in prompt]
    f.expect(
        len(placeholders) == len(_PLACEHOLDERS) and bool(calls) and "reply" in details,
        f"its {Action.ASSISTANT_ANSWERED.value} event records the prompt with "
        f"{', '.join(placeholders) or 'no placeholder'}, the call "
        f"{calls[0] if calls else None} and the reply {str(details.get('reply'))[:40]!r}"
        + (f" ({cited(answered[-1:])[0]})" if answered else ""),
        "the trail does not record the exchange (prompt with placeholders, call, reply)",
    )


def _redacted(f: Findings, target: Target) -> None:
    tenant = target.tenants()[0]
    email = f"drill.{secrets.token_hex(4)}@example.org"
    raw = (email, _IBAN, _PHONE)
    admin = target.session(admin_of(target, tenant))
    person = next(u for u, _ in first_of_each_role_set(target, tenant) if u != admin.username)
    if target.script is None:
        raise DrillError("the instance's model is not scripted: a tool call cannot be played")
    started = now()
    # The model calls a tool no one has (refused, recorded) with what the person typed.
    target.script.play(
        [{"tool_calls": [{"name": _PROBE_TOOL, "arguments": {"note": email}}]}, {"text": "noted"}]
    )
    sent = target.session(person).assistant(
        f"Please note my contact: {email}, phone {_PHONE}, and refund to IBAN {_IBAN}."
    )
    f.expect(
        sent.status_code == 200,
        f"{person} sent the assistant an e-mail address, a phone number and an IBAN "
        f"→ {sent.status_code}",
        f"the assistant answered {sent.status_code}",
    )
    _exchange_recorded(f, admin, target.session(person), started)
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
