"""The identity and authorization conformance checks against a live instance. Healthy, every
row passes; with one tenant table's row-level security policy dropped, AZ-2 fails; with the
audit trail's append-only trigger disabled, AZ-4 fails, and `ramparts conformance`, run the
way a reviewer runs it (`--url` with the instance's credentials and database), exits 1. Each
sabotage is undone after its test.

The checks run in-process for their detail (one shared instance, whose people stay signed in
from test to test); the command, which costs seconds of imports per run, runs once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ramparts.db.rls import CURRENT_TENANT
from ramparts.tabletop.conformance.runner import run_conformance
from ramparts.tabletop.report import Row, Verdict
from ramparts.tabletop.target import Target

# Each test starts and plays real instances (a `ramparts demo` each, then the drill): minutes
# on a loaded CI machine, past the suite's default hang guard of 120 s.
pytestmark = pytest.mark.timeout(600)

CONTROLS = ("ID-1", "ID-2", "ID-3", "ID-4", "AZ-1", "AZ-2", "AZ-4", "AZ-5")
#: A tenant table (the quote app's) and the audit trail's append-only trigger.
SABOTAGED_TABLE = "quotes"
AUDIT_TRIGGER = "audit_events_append_only"


def checked(target: Target, *controls: str) -> dict[str, Row]:
    """The runtime's checks of `controls`, in-process, by id."""
    report = run_conformance(target, [], only=controls)
    return {row.id: row for row in report.rows}


def command(target: Target, workdir: Path, *controls: str) -> tuple[int, dict[str, Any]]:
    """`ramparts conformance --url ...` against `target`: its exit status and rows by id."""
    assert target.urls is not None
    assert target.urls.owner_url is not None
    assert target.script is not None
    credentials = workdir / "demo-credentials.json"
    credentials.write_text(json.dumps(target.report))
    argv = [
        sys.executable,
        "-c",
        "from ramparts.cli import main; main()",
        "conformance",
        "--url",
        target.base_url,
        "--credentials",
        str(credentials),
        "--script",
        str(target.script.path),
        "--database-url",
        target.urls.owner_url.render_as_string(hide_password=False),
        "--json",
        *(arg for control in controls for arg in ("--control", control)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    # The apps the instance serves: the policies checked must be the ones it runs.
    env["RAMPARTS_APPS"] = target.description["apps"].replace(" ", "")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.stdout, done.stderr
    return done.returncode, {row["id"]: row for row in json.loads(done.stdout)["rows"]}


def test_a_healthy_instance_passes_every_identity_and_authorization_control(
    instance: Target,
) -> None:
    rows = checked(instance, *CONTROLS)
    assert list(rows) == list(CONTROLS)
    failed = {i: r.observed for i, r in rows.items() if r.verdict is not Verdict.PASS}
    assert not failed, failed
    evidence = {i: "\n".join(r.evidence) for i, r in rows.items()}
    # What each row saw, not only that it passed.
    assert "identity:second_factor:locked" in evidence["ID-1"]
    assert "alg none → 401" in evidence["ID-2"]
    assert "identity:refresh_token:reused" in evidence["ID-2"]
    assert "→ 401 on each of" in evidence["ID-3"]
    assert "ai:content:refused" in evidence["ID-4"]
    assert "planted `forbid" in evidence["AZ-1"]
    assert ", 0 of another tenant" in evidence["AZ-2"]
    assert "UPDATE refused" in evidence["AZ-4"]
    assert "[EMAIL:" in evidence["AZ-4"]
    assert "put back:" in evidence["AZ-5"]


@pytest.fixture
def policy_dropped(instance: Target) -> Iterator[str]:
    with instance.owner() as db:
        db.execute(f"DROP POLICY tenant_isolation ON {SABOTAGED_TABLE}")
    try:
        yield SABOTAGED_TABLE
    finally:
        with instance.owner() as db:
            db.execute(
                f"CREATE POLICY tenant_isolation ON {SABOTAGED_TABLE} USING "
                f"(tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
            )


def test_a_dropped_row_level_security_policy_fails_az_2(
    instance: Target, policy_dropped: str
) -> None:
    row = checked(instance, "AZ-2")["AZ-2"]
    assert row.verdict is Verdict.FAIL
    assert f"{policy_dropped}: no row-level security policy applies to" in row.observed


@pytest.fixture
def trigger_disabled(instance: Target) -> Iterator[str]:
    with instance.owner() as db:
        db.execute(f"ALTER TABLE audit_events DISABLE TRIGGER {AUDIT_TRIGGER}")
    try:
        yield AUDIT_TRIGGER
    finally:
        with instance.owner() as db:
            db.execute(f"ALTER TABLE audit_events ENABLE TRIGGER {AUDIT_TRIGGER}")


def test_a_disabled_audit_trigger_fails_az_4_and_the_command(
    instance: Target, tmp_path: Path, trigger_disabled: str
) -> None:
    status, rows = command(instance, tmp_path, "AZ-4")
    assert status == 1
    observed = rows["AZ-4"]["observed"]
    assert rows["AZ-4"]["verdict"] == "FAIL"
    assert f"trigger {trigger_disabled} disabled" in observed
    # Not only the catalog: the owner's change of an event went through (and was rolled back).
    assert "the owner changed an audit event" in observed
