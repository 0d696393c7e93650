"""Live checks of the payments controls (PAY-1..PAY-5), the runtime's part: what holds for any
app that takes money (the edge, the stored records, the webhook endpoint, the queue, the
ledger and its reconciliation). What only an app's own routes can show (a charge, a payment
page of a real payment, 3-D Secure, velocity limits) is that app's part of the same rows
(its drills' `checks`); both must pass."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from psycopg import sql

from ramparts.identity.models import ADMIN_ROLE
from ramparts.payments.tenancy import TENANT_METADATA_KEY
from ramparts.tabletop.browser import signed_in_browser
from ramparts.tabletop.conformance import books, cards, signing
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.poison import PoisonRun, poison_run
from ramparts.tabletop.target import Target
from ramparts.tabletop.webhooks import deliver, event
from ramparts.web.cards import holds_card_number

__all__: list[str] = []

#: Concurrent deliveries of one event (PAY-3).
DUPLICATES = 8
#: How long the worker may take to settle a stored event.
SETTLE_SECONDS = 15.0


def _person(target: Target) -> str:
    """Who the runtime's checks act as: the first tenant's administrator (a role of the
    runtime, not of an app), else its first user."""
    tenant = target.tenants()[0]
    admins = target.users_with(ADMIN_ROLE, tenant)
    if admins:
        return admins[0]
    return next(str(u["username"]) for u in target.report["users"] if u["tenant"] == tenant)


# ---- PAY-1 --------------------------------------------------------------------------------

PAY1 = (
    "no route takes a card number (refused 400 card-number-refused, JSON, forms, queries, "
    "paths), none is stored, the API describes no card field, and the payment page leaves "
    "card entry to the PSP's own fields"
)


@check("PAY-1")
def no_card_numbers(target: Target) -> Outcome:
    username = _person(target)
    person = target.session(username)
    spec = person.get("/openapi.json").json()
    browser = signed_in_browser(target, username)
    try:
        sweep = cards.sweep_routes(person, spec, browser)
        page = cards.read_payment_page(browser, str(uuid.uuid4()))
    finally:
        browser.close()
    stored, searched = cards.stored_card_numbers(target)
    fields = cards.card_fields(spec)
    psp = page.psp_origins()
    foreign = [s for s in page.scripts if not cards.same_origin(s, target.base_url)]
    frames = set(page.csp.get("frame-src", ()))
    problems = [f"accepted: {line}" for line in sweep.accepted]
    problems += [f"card digits stored in {table}" for table in stored]
    problems += [f"the OpenAPI has a card field: {name}" for name in fields]
    if page.status != 200:
        problems.append(f"the payment page answered {page.status}")
    problems += [f"the payment page runs a script not its own: {s}" for s in foreign]
    problems += [f"the payment page has its own field: {f}" for f in page.payment_fields]
    if not psp or not frames or not frames <= psp:
        problems.append("the payment page's policy frames no PSP origin, or more than the PSP")
    evidence = [
        f"{sweep.sent} requests with card numbers ({len(cards.CARDS)} networks, whole, spaced, "
        f"dashed, with the code, as numbers and keys; JSON, forms, queries, paths) "
        f"to {len(spec.get('paths', {}))} documented paths: {len(sweep.refused)} refused",
        *cards.samples(sweep.refused),
        f"database searched as its owner: {searched} tables, card digits in {len(stored)}",
        f"OpenAPI: {len(fields)} card fields",
        f"GET /pay/<id> → {page.status}; scripts {', '.join(page.scripts)}; "
        f"fields in the payment section: {len(page.payment_fields)}; "
        f"its CSP adds only {', '.join(sorted(psp)) or 'nothing'} (script, frame, connect)",
    ]
    if problems:
        return fail(PAY1, "; ".join(problems[:6]), evidence)
    return passed(
        PAY1,
        f"all {sweep.sent} card-number requests refused; no digits in {searched} tables; "
        f"no card field in the API; the payment page mounts only the PSP's fields",
        evidence,
    )


# ---- PAY-2 --------------------------------------------------------------------------------

PAY2 = (
    "only PSP tokens are stored: no card column anywhere, PSP ids and fingerprints in the "
    "payment records, no card number in any of their rows"
)
#: The payment records and what each PSP id column must look like.
_PSP_IDS = {
    ("payments", "psp_id"): "^pi_[A-Za-z0-9_]+$",
    ("payment_refunds", "psp_id"): "^re_[A-Za-z0-9_]+$",
    ("payment_disbursements", "psp_id"): "^(po|tr)_[A-Za-z0-9_]+$",
    ("payment_attempts", "card_fingerprint"): "^[A-Za-z0-9]{1,64}$",
}
_RECORDS = (
    "payments",
    "payment_attempts",
    "payment_refunds",
    "payment_disbursements",
    "psp_events",
)


@check("PAY-2")
def only_tokens_stored(target: Target) -> Outcome:
    problems: list[str] = []
    evidence: list[str] = []
    with target.owner() as owner:
        columns = owner.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    named = [f"{t}.{c}" for t, c in columns if cards.card_column(c)]
    problems += [f"a card column: {name}" for name in named]
    evidence.append(f"{len(columns)} columns: {len(named)} named for card data")
    counts: dict[str, list[int]] = {}
    for conn in cards.owner_views(target):
        for (table, column), pattern in _PSP_IDS.items():
            found = conn.execute(
                sql.SQL("SELECT count({c}), count({c}) FILTER (WHERE {c} !~ %s) FROM {t}").format(
                    c=sql.Identifier(column), t=sql.Identifier(table)
                ),
                (pattern,),
            ).fetchone() or (0, 0)
            _add(counts, f"{table}.{column}", found)
        for table in _RECORDS:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            ).fetchall()
            _add(counts, table, (len(rows), sum(1 for (text,) in rows if holds_card_number(text))))
    for name, (total, odd) in counts.items():
        if name in _RECORDS:
            evidence.append(f"{name}: {total} rows, {odd} holding a card number")
        else:
            evidence.append(f"{name}: {total} values, {odd} not of the PSP's form")
        if odd:
            problems.append(f"{name}: {odd} of {total} hold what is not a PSP token")
    observed = (
        "; ".join(problems)
        if problems
        else (
            "no card column; payment records hold PSP ids and fingerprints only; "
            "3-D Secure and velocity limits are the paying app's part of this row"
        )
    )
    return (fail if problems else passed)(PAY2, observed, evidence)


def _add(counts: dict[str, list[int]], name: str, found: tuple[int, int]) -> None:
    total = counts.setdefault(name, [0, 0])
    total[0] += found[0]
    total[1] += found[1]


# ---- PAY-3 --------------------------------------------------------------------------------

PAY3 = (
    "a webhook event is taken once by its id (again, or many at once: one row, one job, "
    "settled once), and failed work is retried with exponential backoff and jitter"
)
_POISON: dict[int, tuple[Target, PoisonRun]] = {}


def _poison(target: Target) -> PoisonRun:
    """The poison job's run on `target`, once per drill (PAY-3 and PAY-4 both read it)."""
    kept = _POISON.get(id(target))
    if kept is None or kept[0] is not target:
        kept = (target, poison_run(target))
        _POISON[id(target)] = kept
    return kept[1]


def _intent_event(tenant: str) -> bytes:
    """A signed-looking event about an intent of `tenant` that no payment has: stored, then
    settled `ignored` by the worker without moving anything."""
    intent = {
        "id": f"pi_drill{secrets.token_hex(8)}",
        "object": "payment_intent",
        "amount": 100,
        "currency": "eur",
        "status": "succeeded",
        "metadata": {TENANT_METADATA_KEY: tenant},
    }
    return json.dumps(event("payment_intent.succeeded", intent)).encode()


def _event_rows(target: Target, event_id: str) -> tuple[int, int, str | None]:
    """(stored rows, jobs, state) of `event_id`, as the owner sees them."""
    with target.owner() as owner:
        stored = owner.execute(
            "SELECT count(*), max(state) FROM psp_events WHERE event_id = %s", (event_id,)
        ).fetchone() or (0, None)
        jobs = owner.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE lock = %s", (f"psp_event:{event_id}",)
        ).fetchone() or (0,)
    return int(stored[0]), int(jobs[0]), stored[1]


def _settled(target: Target, event_id: str) -> tuple[int, int, str | None]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        rows = _event_rows(target, event_id)
        if rows[2] not in {None, "pending"} or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@check("PAY-3")
def exactly_once(target: Target) -> Outcome:
    tenant = str(target.tenant(target.tenants()[0])["id"])
    problems: list[str] = []
    evidence: list[str] = []
    again = _intent_event(tenant)
    answers = [deliver(target, again), deliver(target, again)]
    statuses = [a.json().get("status") if a.is_success else a.status_code for a in answers]
    evidence.append(f"one event delivered twice → {statuses}")
    if statuses != ["stored", "duplicate"]:
        problems.append(f"a delivery repeated was answered {statuses}")
    burst = _intent_event(tenant)
    with ThreadPoolExecutor(DUPLICATES) as pool:
        racing = list(pool.map(lambda _: deliver(target, burst), range(DUPLICATES)))
    counted = [a.json().get("status") if a.is_success else a.status_code for a in racing]
    evidence.append(
        f"one event delivered {DUPLICATES} times at once → {counted.count('stored')} stored, "
        f"{counted.count('duplicate')} duplicate"
    )
    if counted.count("stored") != 1 or counted.count("duplicate") != DUPLICATES - 1:
        problems.append(f"{DUPLICATES} concurrent deliveries were answered {counted}")
    for body in (again, burst):
        event_id = json.loads(body)["id"]
        rows, jobs, state = _settled(target, event_id)
        evidence.append(f"{event_id}: {rows} row, {jobs} job, settled {state}")
        if (rows, jobs) != (1, 1) or state in {None, "pending"}:
            problems.append(f"{event_id}: {rows} rows, {jobs} jobs, state {state}")
    run = _poison(target)
    backoff = run.backoff_problem()
    evidence.append(
        f"failing job {run.job_id}: retried {len(run.waits)} times, waits chosen by the worker "
        + ", ".join(f"{w:.1f}s" for w in run.waits)
    )
    if backoff:
        problems.append(backoff)
    observed = (
        "; ".join(problems)
        if problems
        else (
            "an event's repeats and racing copies were stored once and settled once; the queue "
            "retried a failing job with doubling, jittered waits (outbound PSP calls retry inside "
            "the SDK with the same key: not observable on a healthy PSP; the paying app's part "
            "shows the charge's idempotency)"
        )
    )
    return (fail if problems else passed)(PAY3, observed, evidence)


# ---- PAY-4 --------------------------------------------------------------------------------

PAY4 = (
    "`Stripe-Signature` verified (forged, stale, future, unsigned, malformed and altered "
    "deliveries refused 400 signature-refused); several secrets taken during a rotation; an "
    "exhausted job is dead-lettered, alerted on, and replayable"
)


@check("PAY-4")
def verified_webhooks(target: Target) -> Outcome:
    problems: list[str] = []
    seen = signing.deliveries(target)
    evidence = list(seen.held) + list(seen.broken)
    problems += [f"not as expected: {line}" for line in seen.broken]
    if seen.broken:
        # Every signature is taken or none is: a rotation would show nothing more.
        problems.append("rotation not checked: the signatures themselves do not hold")
    elif target.operator is None:
        problems.append("rotation not checked: the drill is not the instance's operator")
    else:
        rotated = signing.rotation(target, target.operator)
        evidence += rotated.seen.held + rotated.seen.broken
        evidence.append(
            "the server saw the rotation after "
            + " and its undoing after ".join(f"{w:.1f}s" for w in rotated.waited)
            + ("; the KMS list was put back as it was" if rotated.restored else "")
        )
        problems += [f"rotation: {line}" for line in rotated.seen.broken]
    run = _poison(target)
    evidence += _dead_letter_evidence(run)
    problems += _dead_letter_problems(run)
    observed = (
        "; ".join(problems)
        if problems
        else (
            "every tampered delivery refused before parsing, both secrets taken during the "
            "rotation and the list restored; the failing job dead-lettered, alerted, replayed"
        )
    )
    return (fail if problems else passed)(PAY4, observed, evidence)


def _dead_letter_evidence(run: PoisonRun) -> list[str]:
    letter = run.letter
    listed = (
        f"dead letter: job {letter.job_id} {letter.task}, {letter.attempts} attempts, "
        f"last error {letter.error}"
        if letter
        else f"job {run.job_id}: not in the dead-letter list"
    )
    return [
        listed,
        f"metrics ramparts_alerts_total{{kind=dead_letter}}: {run.alerts_before} → "
        f"{run.alerts_dead} (dead letter) → {run.alerts_after_replay} (replayed, failed again)",
        f"replayed: ran again (attempts {run.attempts} → {run.attempts_after_replay}); "
        f"the drill's job then removed: {run.removed}",
    ]


def _dead_letter_problems(run: PoisonRun) -> list[str]:
    problems = []
    if run.letter is None or run.letter.error is None:
        problems.append("the exhausted job is not listed as a dead letter with its error")
    if run.alerts_dead is None:
        problems.append("the alert could not be read (GET /metrics refused)")
    elif run.alerts_before is not None and run.alerts_dead <= run.alerts_before:
        problems.append("no dead_letter alert was raised")
    if not run.replayed or run.attempts_after_replay <= run.attempts:
        problems.append("the dead letter was not replayed")
    return problems


# ---- PAY-5 --------------------------------------------------------------------------------

PAY5 = (
    "the database refuses an unbalanced entry and any change to posted ones; the books "
    "verify; a reconciliation run flags drift planted in them, and is clean once it is reversed"
)


@check("PAY-5")
def balanced_books(target: Target) -> Outcome:
    problems: list[str] = []
    unbalanced = books.unbalanced_refusal(target)
    changes = books.append_only_refusals(target)
    evidence = [unbalanced.line(), *(r.line() for r in changes)]
    if not (unbalanced.refused and unbalanced.sqlstate == "23514"):
        problems.append("an unbalanced entry was not refused by the balance check")
    problems += [f"not refused: {r.attempt}" for r in changes if not r.refused]
    problems += [f"{r.attempt}: {r.said}" for r in changes if r.refused and r.sqlstate != "42501"]
    if target.operator is None:
        problems.append("reconciliation not run: the drill is not the instance's operator")
    else:
        runs = books.reconcile_with_planted_drift(target, target.operator)
        evidence += [
            f"reconciliation run {r.run_id} of {r.day}: {r.status}, {r.matched} matched, "
            f"drift {r.drift_counts() or 'none'}"
            for r in runs.runs
        ]
        evidence += [f"alert raised: {a}" for a in runs.alerts]
        before, planted, after = runs.runs
        if not before.clean:
            problems.append(f"the books and the PSP disagree already: {before.drift_counts()}")
        if not runs.found_planted(planted):
            problems.append(f"the planted charge {runs.planted} was not flagged")
        if runs.found_planted(after) or not after.clean:
            problems.append("the run after the reversal is not clean")
    verify, counts = books.books_verified(target)
    evidence.append(
        f"ledger verify: guards in place and {counts['books']} books ({counts['entries']} "
        f"entries, {counts['postings']} postings) intact"
        if not verify
        else f"ledger verify: {len(verify)} problems"
    )
    problems += verify
    observed = (
        "; ".join(problems[:6])
        if problems
        else (
            "unbalanced and changed entries refused by the database; books intact; the planted "
            "drift was flagged missing_at_psp and cleared by its reversal"
        )
    )
    return (fail if problems else passed)(PAY5, observed, evidence)
