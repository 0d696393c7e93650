"""`ramparts tabletop` (EX-2), run as a reviewer runs it: on a fresh instance of its own it
exits 0 with every step holding and audit events as evidence; on an instance with one control
broken inside it, the steps that prove that control FAIL and it exits 1.

Three instances in all (each ~7 s to start, and the scenario ~8 s): the command's own, and one
per sabotage, which the command plays against with `--url`, and then the conformance check of
EX-2 (which plays the scenario again)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from ramparts.tabletop.conformance.runner import run_conformance
from ramparts.tabletop.drills import served_drills
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.target import Target
from tests.conftest import cli_env

# Each test starts and plays real instances (a `ramparts demo` each, then the drill): minutes
# on a loaded CI machine, past the suite's default hang guard of 120 s.
pytestmark = pytest.mark.timeout(600)

RAMPARTS = str(Path(sys.executable).with_name("ramparts"))
#: The command's own instance, the scenario and the stop, with room for a loaded machine.
TIMEOUT = 240
#: The steps the runtime plays on the PSP webhook (forged, stale, altered, replayed late; and
#: a replay within the tolerance, which a broken signature check does not change).
REFUSED_DELIVERIES = {"WH-1", "WH-2", "WH-3", "WH-4"}
#: The quote app's step of webhooks claiming its deposit was paid.
DEPOSIT_WEBHOOKS = "TT-10"
#: The quote app's step of a Buyer's malicious prompt.
BUYER_PROMPT = "TT-3"
#: The quote app's step of the PSP's webhook confirming the paid deposit.
PAID = "TT-11"
#: The quote app's step of the injected refund asked again of the paid deposit.
PAID_REFUND = "TT-12"
#: The steps whose evidence must name audit events: the AI and approval steps.
AUDITED = {"TT-3", "TT-4", "TT-5", "TT-7", "TT-8", "TT-12", "TT-14"}
#: The scenario's steps: the quote app's fifteen, the runtime's five webhook steps.
STEPS = 20


def _tabletop(*args: str, home: Path) -> tuple[int, dict[str, Any], str]:
    """`ramparts tabletop ARGS --json`: exit code, its report, what it said on stderr."""
    done = subprocess.run(
        [RAMPARTS, "tabletop", *args, "--json"],
        env=cli_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"not a JSON report (exit {done.returncode}): {done.stderr[-2000:]}")
    return done.returncode, report, done.stderr


def _against(target: Target, home: Path) -> tuple[int, dict[str, Any], str]:
    """The command played against `target`, as an operator points it at a running one."""
    credentials = home.parent / "credentials.json"
    credentials.write_text(json.dumps(target.report))
    assert target.urls is not None
    assert target.urls.owner_url is not None
    assert target.script is not None
    database = target.urls.owner_url.render_as_string(hide_password=False)
    return _tabletop(
        "--url",
        target.base_url,
        "--credentials",
        str(credentials),
        "--script",
        str(target.script.path),
        "--database-url",
        database,
        home=home,
    )


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {row["id"]: row["verdict"] for row in report["rows"]}


def test_the_scenario_holds_on_a_fresh_instance(pg_server: URL, tmp_path: Path) -> None:
    server = pg_server.set(drivername="postgresql").render_as_string(hide_password=False)
    code, report, stderr = _tabletop("--database-server", server, home=tmp_path / "home")

    failed = {r["id"]: r["observed"] for r in report["rows"] if r["verdict"] != "PASS"}
    assert failed == {}, stderr[-2000:]
    assert code == 0
    assert report["kind"] == "tabletop"
    assert report["passed"] is True
    verdicts = _verdicts(report)
    # Every phase was played: the app's scenario, then the runtime's webhook steps.
    assert {
        BUYER_PROMPT,
        DEPOSIT_WEBHOOKS,
        PAID_REFUND,
        "TT-14",
        "TT-15",
    } | REFUSED_DELIVERIES <= set(verdicts)
    assert "WH-5" in verdicts
    rows = {row["id"]: row for row in report["rows"]}
    for step in AUDITED:
        cited = [line for line in rows[step]["evidence"] if line.startswith("audit #")]
        assert cited, f"{step} cites no audit event: {rows[step]['evidence']}"
    # The buyer's calls were refused as tool calls, and audited as such.
    assert sum("ai:tool:called deny" in e for e in rows[BUYER_PROMPT]["evidence"]) == 2
    # The model's calls were witnessed before what it was offered was judged.
    assert "call(s) witnessed) was offered" in rows[BUYER_PROMPT]["observed"]
    # Unsigned means no header at all; an empty one is refused as well.
    webhooks = rows[DEPOSIT_WEBHOOKS]["observed"]
    assert "unsigned (no Stripe-Signature header): 400 signature-refused" in webhooks
    assert "an empty Stripe-Signature: 400 signature-refused" in webhooks
    # The deposit was confirmed by the PSP's own event, processed once.
    assert "payment_intent.succeeded events of" in rows[PAID]["observed"]
    assert " processed" in rows[PAID]["observed"]
    # The injected refund of the paid deposit waited, was rejected, and moved nothing.
    assert "1 rejection(s) audited" in rows[PAID_REFUND]["observed"]
    # Each forged delivery was answered 400 signature-refused, as its evidence shows.
    for step in REFUSED_DELIVERIES:
        assert any("→ 400 signature-refused" in e for e in rows[step]["evidence"]), step
    assert report["configuration"]["model"].startswith("scripted")


@pytest.mark.parametrize(
    ("sabotage", "broken"),
    [
        ("webhook-verification-off", {DEPOSIT_WEBHOOKS} | REFUSED_DELIVERIES),
        ("tool-role-check-removed=issue_refund", {BUYER_PROMPT}),
    ],
)
def test_a_broken_control_fails_its_steps_and_the_command(
    drill_instance: Callable[..., AbstractContextManager[Target]],
    tmp_path: Path,
    sabotage: str,
    broken: set[str],
) -> None:
    with drill_instance(sabotage=sabotage) as target:
        code, report, _ = _against(target, tmp_path / "home")
        _after_another_process(target)
        (control,) = run_conformance(target, served_drills(target), only=["EX-2"]).rows

    assert code == 1
    assert report["passed"] is False
    failed = {step for step, verdict in _verdicts(report).items() if verdict == "FAIL"}
    # Exactly what the broken control proves fails; the scenario still played to its end
    # (a replay within the tolerance, WH-5, is a duplicate whether signatures are checked).
    assert failed == broken
    assert len(report["rows"]) == STEPS
    # The conformance row of the control (EX-2) plays the scenario again, and fails with it.
    assert control.verdict is Verdict.FAIL
    assert {f"{step} FAIL" for step in broken} <= {line.split(":")[0] for line in control.evidence}
    assert control.observed.startswith(f"{len(broken)} of {STEPS} steps did not hold")


def _after_another_process(target: Target) -> None:
    """The command, in its own process, signed everyone in with this TOTP step's codes,
    which the instance now refuses as replays: this process's sign-ins take the next step's
    (one step of drift is accepted) rather than wait for the clock."""
    for user in target.report["users"]:
        target.totp(str(user["totp_secret"]))
