"""EX-1, the reference app as it runs: its roles sign in and carry their role; each role may do
its part and no other (create a quote: Buyer; charge a deposit: Finance); the assistant offers
`create_quote` to a Buyer and `charge_deposit` to Finance only (what the model is shown, read
from the scripted model's witness, and what the API lists); row-level security keeps the app's
tables per tenant; a deposit is idempotent; and every tool call the model makes is audited."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from psycopg import sql

from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes.drills import deals
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.tabletop.conformance.answers import problem_type, said
from ramparts.tabletop.conformance.checks import Outcome, fail, passed
from ramparts.tabletop.conformance.playing import person
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, Target

__all__ = ["reference_app"]

APP_TABLES = ("quotes", "quote_items")
CREATE, CHARGE = "create_quote", "charge_deposit"
EX1 = (
    "Buyer, Seller and Finance sign in with their role; create_quote is a Buyer's and "
    "charge_deposit Finance's only (API and assistant); RLS on the app's tables; an idempotent "
    "deposit; every tool call audited"
)


def _claims(session: ApiSession) -> dict[str, Any]:
    """The access token's claims, as the API reads them (the signature is the API's job)."""
    payload = session.access_token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def _offered(target: Target, session: ApiSession) -> tuple[set[str], set[str] | None]:
    """The tools the API lists for `session`'s person, and those the model was shown for
    one message of theirs (None when the instance's model cannot be played)."""
    listed = {t["name"] for t in session.get("/api/assistant/tools").json()}
    if target.script is None:
        return listed, None
    target.script.play([{"text": "ready"}])
    session.assistant("What can you do for me?")
    shown = {tool for call in target.script.seen() for tool in call.tools}
    return listed, shown


def reference_app(target: Target) -> Outcome:
    cast = deals.cast_of(target)
    people = {BUYER: cast.buyer, SELLER: cast.seller, FINANCE: cast.finance}
    sessions = {role: target.session(name) for role, name in people.items()}
    auditor = target.session(target.users_with(ADMIN_ROLE, cast.tenant)[0])
    problems: list[str] = []
    evidence: list[str] = []
    for role, session in sessions.items():
        roles = _claims(session).get("roles", [])
        evidence.append(f"{session.username} signed in (password, TOTP): roles {roles}")
        if role not in roles:
            problems.append(f"{session.username}'s token carries no {role} role")
    problems += _gates(target, cast, sessions, evidence)
    problems += _tools(target, sessions, evidence)
    problems += _row_security(target, cast, evidence)
    problems += _audited_tool_call(target, sessions[BUYER], auditor, evidence)
    observed = (
        "; ".join(problems[:6])
        if problems
        else (
            "each role did its part and was refused the others', in the API and the assistant; "
            "RLS kept the tenants apart; the deposit replayed; the tool calls are audited"
        )
    )
    return (fail if problems else passed)(EX1, observed, evidence)


def _gates(
    target: Target, cast: deals.Cast, sessions: dict[str, ApiSession], evidence: list[str]
) -> list[str]:
    problems = []
    body = {"title": "Drill: roles", "currency": "EUR", "items": deals.CHAIRS}
    for role, session in sessions.items():
        answer = session.post("/api/quotes", json=body)
        evidence.append(said(answer, f"{role}: POST /api/quotes"))
        refused = answer.status_code == 403 and problem_type(answer) == "forbidden"
        as_expected = answer.status_code == 201 if role == BUYER else refused
        if not as_expected:
            problems.append(f"{role} creating a quote: {said(answer)}")
    quote = deals.deal(target, cast)
    key = f"drill-{uuid.uuid4()}"
    for role in (BUYER, SELLER):
        answer = deals.charge(sessions[role], quote["id"])
        evidence.append(said(answer, f"{role}: POST /api/quotes/{{id}}/deposit"))
        if answer.status_code != 403 or problem_type(answer) != "forbidden":
            problems.append(f"{role} charging a deposit: {said(answer)}")
    first = deals.charge(sessions[FINANCE], quote["id"], key=key)
    again = deals.charge(sessions[FINANCE], quote["id"], key=key)
    listed = sessions[FINANCE].get("/api/payments", params={"quote_id": quote["id"]}).json()
    evidence.append(
        said(first, "Finance: POST /api/quotes/{id}/deposit")
        + f", again with its key → {again.status_code}"
        + (" same bytes" if again.content == first.content else " OTHER BYTES")
        + f", {len(listed['items'])} payment"
    )
    if first.status_code != 201 or again.content != first.content or len(listed["items"]) != 1:
        problems.append("Finance's deposit is not idempotent")
    return problems


def _tools(target: Target, sessions: dict[str, ApiSession], evidence: list[str]) -> list[str]:
    problems = []
    for role, session in sessions.items():
        listed, shown = _offered(target, session)
        seen = "not played" if shown is None else ", ".join(sorted(shown))
        evidence.append(f"{role}: GET /api/assistant/tools {sorted(listed)}; model shown: {seen}")
        for tools, where in ((listed, "listed"), (shown, "shown to the model")):
            if tools is None:
                continue
            if (CREATE in tools) != (role == BUYER):
                problems.append(f"{CREATE} {where} for {role}: {CREATE in tools}")
            if (CHARGE in tools) != (role == FINANCE):
                problems.append(f"{CHARGE} {where} for {role}: {CHARGE in tools}")
    if target.script is None:
        problems.append("the model could not be played: what it is offered is not seen")
    return problems


def _row_security(target: Target, cast: deals.Cast, evidence: list[str]) -> list[str]:
    """Each app table has row-level security, forced, with a policy; as the runtime role in
    one tenant, no other tenant's row of it is read."""
    problems = []
    tenant = str(target.tenant(cast.tenant)["id"])
    with target.owner() as owner, target.runtime() as runtime:
        for table in APP_TABLES:
            row = owner.execute(
                "SELECT c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname) "
                "FROM pg_class c WHERE c.relname = %s AND c.relkind = 'r'",
                (table,),
            ).fetchone()
            others = owner.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE tenant_id <> %s").format(
                    sql.Identifier(table)
                ),
                (tenant,),
            ).fetchone()
            with runtime.transaction():
                runtime.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                leaked = runtime.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE tenant_id <> %s").format(
                        sql.Identifier(table)
                    ),
                    (tenant,),
                ).fetchone()
            evidence.append(
                f"{table}: RLS {row and row[0]}, forced {row and row[1]}, {row and row[2]} "
                f"policy; other tenants' rows {others and others[0]} (owner), "
                f"{leaked and leaked[0]} (runtime role in {cast.tenant})"
            )
            if not row or not (row[0] and row[1] and row[2]):
                problems.append(f"{table} is not under forced row-level security")
            if not others or not others[0] or not leaked or leaked[0]:
                problems.append(
                    f"{table}: the runtime role read other tenants' rows, or none exist"
                )
    return problems


def _audited_tool_call(
    target: Target, buyer: ApiSession, auditor: ApiSession, evidence: list[str]
) -> list[str]:
    """A model's tool calls for a Buyer, one allowed and one not: both in the audit trail."""
    if target.script is None:
        return ["the model could not be played: no tool call to audit"]
    since = now()
    arguments = {"title": "Drill: audited", "currency": "EUR", "items": deals.CHAIRS}
    target.script.play(
        [
            {"tool_calls": [{"name": CREATE, "arguments": arguments}]},
            {"tool_calls": [{"name": CHARGE, "arguments": {"quote_id": str(uuid.uuid4())}}]},
            {"text": "done"},
        ]
    )
    answer = buyer.assistant("Ask for four chairs, then charge its deposit.")
    actions = answer.json().get("actions", []) if answer.is_success else []
    outcomes = {a.get("tool"): a.get("status") for a in actions}
    # This Buyer's calls only: the window opens a little early (clock margin), on others'.
    actor = person(target, buyer).subject
    events = audit_events(auditor, since=since, action="ai:tool:called", actor=actor)
    by_tool = {(e.get("resource") or {}).get("id"): e for e in events}
    evidence.append(
        said(answer, "the Buyer's message, the model calling two tools") + f": {outcomes}"
    )
    evidence += cited([by_tool[t] for t in (CREATE, CHARGE) if t in by_tool])
    problems = []
    if outcomes.get(CREATE) != "executed" or outcomes.get(CHARGE) != "refused":
        problems.append(f"the model's calls for a Buyer ended {outcomes}")
    missing = sorted({CREATE, CHARGE} - set(by_tool))
    if missing:
        problems.append(f"tool calls missing from the audit trail: {missing}")
    decisions = {t: by_tool[t].get("decision") for t in by_tool}
    if not missing and decisions != {CREATE: "allow", CHARGE: "deny"}:
        problems.append(f"the tool calls were audited as {decisions}")
    return problems
