"""The payments rows (PAY-1..PAY-5) and the reference app's (EX-1) of `ramparts conformance`,
on real instances: a healthy one passes every row, with the evidence it saw; one whose
webhook verification is switched off fails PAY-4, and the command exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ramparts.quotes.drills import DRILLS
from ramparts.tabletop.conformance.cards import _PageParser, _policy
from ramparts.tabletop.conformance.runner import run_conformance
from ramparts.tabletop.report import Report, Verdict
from ramparts.tabletop.target import Target
from ramparts.tabletop.webhooks import altered_byte, event

# Each test starts and plays real instances (a `ramparts demo` each, then the drill): minutes
# on a loaded CI machine, past the suite's default hang guard of 120 s.
pytestmark = pytest.mark.timeout(600)

RAMPARTS = str(Path(sys.executable).with_name("ramparts"))
ROWS = ["PAY-1", "PAY-2", "PAY-3", "PAY-4", "PAY-5", "EX-1"]


def _conformance(target: Target, *controls: str) -> subprocess.CompletedProcess[str]:
    """`ramparts conformance --url` against `target`, as its operator runs it (its home, KMS,
    database and PSP in the environment)."""
    assert target.operator is not None
    assert target.script is not None
    command = [RAMPARTS, "conformance", "--url", target.base_url, "--json"]
    command += ["--script", str(target.script.path)]
    command += [part for control in controls for part in ("--control", control)]
    return subprocess.run(
        command,
        env=dict(target.operator.env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _evidence(report: Report, control: str) -> str:
    [row] = [row for row in report.rows if row.id == control]
    return "\n".join(row.evidence)


def test_a_healthy_instance_passes_the_payments_rows_with_evidence(instance: Target) -> None:
    report = run_conformance(instance, [("quotes", DRILLS)], only=ROWS)

    assert [(row.id, row.verdict) for row in report.rows] == [(r, Verdict.PASS) for r in ROWS], [
        (row.id, row.observed) for row in report.rows if row.verdict is not Verdict.PASS
    ]
    pay1 = _evidence(report, "PAY-1")
    assert "card digits in 0" in pay1
    assert "payment section present, fields in it: 0, card-like fields on the page: 0" in pay1
    assert "OpenAPI: 0 card fields" in pay1
    assert "POST /api/payments/{id}/confirm with a card number → 400 card-number-refused" in pay1
    pay2 = _evidence(report, "PAY-2")
    assert "status requires_action, client_secret given" in pay2
    assert "limit card_attempts_per_hour" in pay2
    assert "as the owner counts them: 5 (its configured limit: 5)" in pay2
    assert "payment_attempts after the attempts:" in pay2
    assert "0 with a card number" in pay2
    assert "limit payer_amount_per_day" in pay2
    pay3 = _evidence(report, "PAY-3")
    assert "1 stored, 7 duplicate" in pay3
    assert "delivered again → 200 duplicate" in pay3
    assert "the same again, key K → 201, same bytes" in pay3
    assert "a new quote's deposit, key K → 422 idempotency-key-reused; its payments: 0" in pay3
    assert "refund 200, key R → 422 idempotency-key-reused" in pay3
    # Outbound retries: a failing PSP in front of the sandbox saw four attempts, one key.
    assert "fails the first 3 attempts: deposit → 201" in pay3
    assert "saw 4 POST /v1/payment_intents (1 Idempotency-Key)" in pay3
    pay4 = _evidence(report, "PAY-4")
    assert "one digit of the amount altered: POST /webhooks/psp → 400 signature-refused" in pay4
    assert "rotated: signed with the added secret: POST /webhooks/psp → 200" in pay4
    assert "rotated: signed with the instance's own: POST /webhooks/psp → 200" in pay4
    assert "put back: signed with the drill's secret: POST /webhooks/psp → 400" in pay4
    assert "last error ValueError" in pay4
    assert "removed: True" in pay4
    pay5 = _evidence(report, "PAY-5")
    assert "refused 23514 ledger_entry_balanced" in pay5
    assert "drift {'missing_at_psp': 1}" in pay5
    ex1 = _evidence(report, "EX-1")
    assert "ai:tool:called allow" in ex1
    assert "ai:tool:called deny" in ex1
    assert "0 (runtime role in" in ex1

    # The command line, against the same instance as its operator: exit 0. PAY-4 is the row
    # no person signs in for: a second process's sign-ins would replay the TOTP steps this
    # one just used (refused, as they must be).
    ran = _conformance(instance, "PAY-4")
    rows = json.loads(ran.stdout)["rows"] if ran.stdout else []
    assert ran.returncode == 0, [(r["id"], r["observed"]) for r in rows] or ran.stderr[-2000:]
    assert [(r["id"], r["verdict"]) for r in rows] == [("PAY-4", "PASS")]


def test_webhook_verification_off_fails_pay4_and_the_command(
    drill_instance: Callable[..., AbstractContextManager[Target]],
) -> None:
    with drill_instance(sabotage="webhook-verification-off") as sabotaged:
        ran = _conformance(sabotaged, "PAY-4")

    assert ran.returncode == 1, ran.stdout[-2000:] + ran.stderr[-2000:]
    [row] = json.loads(ran.stdout)["rows"]
    assert (row["id"], row["verdict"]) == ("PAY-4", "FAIL")
    assert "forged (another secret): POST /webhooks/psp → 200" in row["evidence"]
    assert "one digit of the amount altered: POST /webhooks/psp → 200" in row["evidence"]
    assert "rotation not checked: the signatures themselves do not hold" in row["observed"]


def test_an_altered_delivery_changes_a_digit_of_the_amount() -> None:
    body = json.dumps(
        event("payment_intent.succeeded", {"id": "pi_drill1", "amount": 15000}, event_id="evt_1")
    ).encode()

    altered = json.loads(altered_byte(body))

    assert altered["data"]["object"]["amount"] == 25000
    assert altered["id"] == "evt_1"
    assert len(altered_byte(body)) == len(body)


def test_a_payment_page_policy_with_empty_directives_is_read() -> None:
    assert _policy("default-src 'self';; frame-src https://psp.test;") == {
        "default-src": ("'self'",),
        "frame-src": ("https://psp.test",),
    }


def test_a_card_like_field_anywhere_on_the_payment_page_is_found() -> None:
    parser = _PageParser()
    parser.feed(
        '<form><input name="card-number"><input autocomplete="cc-csc" name="code">'
        '<input name="search"></form><section id="pay"><div id="element"></div></section>'
    )

    assert parser.card_like == ["input card-number", "input code"]
    assert parser.fields == []
    assert parser.has_section
