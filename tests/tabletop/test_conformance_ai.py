"""The live checks of AZ-3, AI-1, AI-2, AI-3 and PLT-1 to PLT-4 against fresh instances.

A healthy instance holds each control (PLT-2 says what it cannot prove, and so is
NOT-IMPLEMENTED, never a pass), and is left as it was found: every switch lifted, the DLP
rules put back, the model keys AI-3 set removed. `ramparts conformance` exits 0 on a
passing row. With the kill-switch ignored inside the instance, PLT-4 fails; with one tool's
role check removed, AZ-3 fails; each time the command exits 1. The sabotaged instances are
played by the command alone: a second player in another process would sign the same people
in again within one TOTP step, which the instance rightly refuses as a replay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from ramparts.tabletop.conformance.runner import run_conformance
from ramparts.tabletop.report import Report, Row, Verdict
from ramparts.tabletop.target import Target

ROWS = ("AZ-3", "AI-1", "AI-2", "AI-3", "PLT-1", "PLT-2", "PLT-3", "PLT-4")
PASSING = ("AZ-3", "AI-1", "AI-2", "AI-3", "PLT-1", "PLT-3", "PLT-4")
# Each instance costs ~7 s, the healthy run ~2 min (PLT-2 builds a release: ~35 s of CPU).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def healthy(instance: Target) -> dict[str, Row]:
    report: Report = run_conformance(instance, [], only=ROWS)
    return {row.id: row for row in report.rows}


def conformance_command(target: Target, *controls: str) -> tuple[int, dict[str, Any]]:
    """`ramparts conformance --url … --json` against `target`, as its operator runs it."""
    assert target.home is not None
    assert target.script is not None
    assert target.urls is not None
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    owner = target.urls.owner_url
    assert owner is not None
    command = [
        sys.executable,
        "-c",
        "from ramparts.cli import main; main()",
        "conformance",
        "--url",
        target.base_url,
        "--credentials",
        str(target.home / "demo-credentials.json"),
        "--script",
        str(target.script.path),
        "--database-url",
        owner.render_as_string(hide_password=False),
        "--json",
        *(f"--control={control}" for control in controls),
    ]
    done = subprocess.run(
        command,
        env=environment | target.environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


def test_a_healthy_instance_holds_each_control(healthy: dict[str, Row]) -> None:
    verdicts = {control: row.verdict for control, row in healthy.items()}
    assert verdicts == {
        **dict.fromkeys(PASSING, Verdict.PASS),
        "PLT-2": verdicts["PLT-2"],
    }, {c: (r.verdict, r.observed, r.evidence) for c, r in healthy.items() if c != "PLT-2"}
    assert verdicts["PLT-2"] is not Verdict.FAIL, healthy["PLT-2"].observed


def test_tools_follow_roles_with_evidence(healthy: dict[str, Row]) -> None:
    row = healthy["AZ-3"]
    lines = "\n".join(row.evidence)
    assert row.evidence[0].endswith("as the policy says")
    assert "NOT as the policy says" not in lines
    assert "not shown to them → refused: not available to you" in lines
    assert "with an unknown field drill_unknown_field → refused: invalid arguments" in lines
    assert "as declared → executed" in lines
    assert sum(line.startswith("audit seq ") for line in row.evidence) >= 3


def test_untrusted_content_and_pii_evidence(healthy: dict[str, Row]) -> None:
    ai1 = "\n".join(healthy["AI-1"].evidence)
    assert "nothing untrusted read → executed" in ai1
    assert ai1.count("→ pending_approval: a write call after untrusted content") == 2
    assert "ai:injection:suspected deny" in ai1
    ai2 = "\n".join(healthy["AI-2"].evidence)
    assert "tokens for EMAIL, IBAN, PHONE, SSN and 0 raw value(s)" in ai2
    assert "a message with a card number → 400 card-number-refused; model calls: 0" in ai2
    assert "under the IBAN rule → 422 content-refused; model calls: 0" in ai2
    assert "(eu) → 503 no-model-endpoint, 0 request(s) reached the endpoint" in ai2


def test_limits_and_model_keys_are_proven(healthy: dict[str, Row]) -> None:
    row = healthy["AI-3"]
    lines = "\n".join(row.evidence)
    assert "another tenant continues" in lines
    assert "→ 404 not-found; model calls: 0" in lines
    assert "→ 429 budget-exhausted" in lines
    assert "request 31 within" in lines
    assert "→ 429 rate-limited" in lines
    assert "globex without a key: 503 no-model-key, 0 model call(s)" in lines
    assert "acme's message: 200, 1 model call(s), each with acme's own key: True" in lines
    assert "globex's message: 200, 1 model call(s), each with globex's own key: True" in lines
    rotated = "acme's message after its key was rotated: 200, 1 model call(s), each with acme's"
    assert rotated in lines
    shared = "acme's rate 4/minute: a colleague's request 3 (after 2 by another person) → 429"
    assert shared in lines
    assert "globex's message while it is limited: 200" in lines
    assert "a colleague → 429 budget-exhausted, 0 model call(s); globex → 200" in lines
    assert "the check's keys of acme and globex removed" in lines
    assert "False" not in lines


def test_the_platform_evidence(healthy: dict[str, Row]) -> None:
    plt1 = "\n".join(healthy["PLT-1"].evidence)
    assert "exit 3, port answered: False" in plt1
    assert "named: demo tenants or users present in the database" in plt1
    plt2 = healthy["PLT-2"]
    assert "a signed release verifies and one altered byte fails it" in plt2.observed
    assert "every locked distribution pinned by hash" in plt2.observed
    plt3 = "\n".join(healthy["PLT-3"].evidence)
    assert "a TLS 1.2 client → refused" in plt3
    assert "a TLS 1.3 client → TLSv1.3" in plt3
    assert "GET a path with a NUL → 400 control-character" in plt3
    plt4 = "\n".join(healthy["PLT-4"].evidence)
    assert "ramparts drill → exit 0" in plt4
    assert "global: " in plt4
    assert "503 ai-disabled" in plt4
    assert "this tool is switched off; offered: False" in plt4


def test_the_instance_is_left_as_it_was_found(instance: Target, healthy: dict[str, Row]) -> None:
    assert healthy  # the checks ran before
    admin = instance.session(instance.users_with("admin", instance.tenants()[0])[0])
    state = admin.get("/api/assistant/killswitch").json()
    assert (state["engaged"], state["tools"]) == (False, [])
    assert admin.get("/api/assistant/dlp").json() == {"forbidden": []}
    with instance.owner() as owner:
        engaged = owner.execute("SELECT count(*) FROM ai_killswitch WHERE engaged").fetchone()
    assert engaged == (0,)


def test_the_command_exits_0_when_its_checks_pass(instance: Target) -> None:
    # PLT-1 signs nobody in: the healthy run's people keep their TOTP steps.
    code, report = conformance_command(instance, "PLT-1")
    assert [(row["id"], row["verdict"]) for row in report["rows"]] == [("PLT-1", "PASS")]
    assert (code, report["passed"]) == (0, True)


@pytest.mark.parametrize(
    ("sabotage", "control", "broken"),
    [
        ("killswitch-ignored", "PLT-4", "did not stop"),
        ("tool-role-check-removed=issue_refund", "AZ-3", "issue_refund, not allowed by the policy"),
    ],
)
def test_a_broken_control_fails_its_row_and_the_command(
    drill_instance: Callable[..., AbstractContextManager[Target]],
    sabotage: str,
    control: str,
    broken: str,
) -> None:
    with drill_instance(sabotage=sabotage) as target:
        code, report = conformance_command(target, control)
        if control == "PLT-4":
            with target.owner() as owner:
                left = owner.execute("SELECT count(*) FROM ai_killswitch WHERE engaged").fetchone()
            assert left == (0,)  # lifted even though it failed
    [row] = report["rows"]
    assert (row["id"], row["verdict"]) == (control, "FAIL"), row
    assert broken in row["observed"]
    assert (code, report["passed"]) == (1, False)
