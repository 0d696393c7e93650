"""PLT-2's rules for the supply-chain gate and the DAST, on planted reports and a planted DAST
runner, then the live check on a real instance.

The gate's report (`scripts/supply-chain`, run now or CI's when newer than the sources): a
bandit or pip-audit failure fails the row; NOT AUDITED (no vulnerability database reachable)
is a stated caveat unless SUPPLY_CHAIN_REQUIRE_VULN_DB=1, which fails it. The DAST: a finding
fails the row, a run that could not start proves nothing.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ramparts.tabletop.conformance.runner import run_conformance
from ramparts.tabletop.conformance.supply_chain import (
    REQUIRE_VULN_DB,
    SUPPLY_CHAIN_REPORT,
    SupplyChainGate,
    _Parts,
    judge_supply_chain,
    run_dast,
)
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.target import Target

HOUR = 3600.0


def tree(root: Path, *, sources_at: float) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "requirements").mkdir()
    for path in (root / "src" / "pkg" / "mod.py", root / "requirements" / "main.lock"):
        path.write_text("x\n")
        os.utime(path, (sources_at, sources_at))
    return root


def gate_report(
    *, sast: str = "PASS", audit: str = "PASS", at: float | None = None
) -> dict[str, Any]:
    finished = datetime.fromtimestamp(at or time.time(), UTC).isoformat(timespec="seconds")
    sast_findings = [
        {
            "filename": "src/pkg/mod.py",
            "line_number": 3,
            "test_id": "B602",
            "issue_severity": "HIGH",
            "issue_text": "subprocess call with shell=True",
        }
    ]
    audit_findings = [
        {"package": "jinja2", "version": "3.1.0", "id": "GHSA-x", "ignored_because": None}
    ]
    return {
        "finished_at": finished,
        "sast": {
            "status": sast,
            "files": 12,
            "findings": sast_findings if sast == "FAIL" else [],
            "bare_nosec": [],
        },
        "audit": {
            "status": audit,
            "packages": 9,
            "findings": audit_findings if audit == "FAIL" else [],
            "not_audited": [{"package": "p", "version": "1"}] * 9 if audit == "NOT AUDITED" else [],
            "problems": [],
        },
    }


def judged(report: dict[str, Any]) -> _Parts:
    parts = _Parts()
    judge_supply_chain(report, "planted", parts)
    return parts


def test_a_passing_gate_proves_sast_and_the_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_VULN_DB, raising=False)
    parts = judged(gate_report())
    assert (parts.failed, parts.unproven) == ([], [])
    assert parts.proven == ["SAST (bandit) passed", "the dependency audit (pip-audit) passed"]


@pytest.mark.parametrize(
    ("sast", "audit", "failed", "cited"),
    [
        ("FAIL", "PASS", ["SAST (bandit) failed"], "bandit: src/pkg/mod.py:3 B602 (HIGH)"),
        ("PASS", "FAIL", ["the dependency audit (pip-audit) failed"], "jinja2 3.1.0 GHSA-x"),
    ],
)
def test_a_finding_fails_the_row_and_is_cited(
    sast: str, audit: str, failed: list[str], cited: str
) -> None:
    parts = judged(gate_report(sast=sast, audit=audit))
    assert parts.failed == failed
    assert any(cited in line for line in parts.evidence), parts.evidence


def test_not_audited_is_a_stated_caveat_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_VULN_DB, raising=False)
    parts = judged(gate_report(audit="NOT AUDITED"))
    assert (parts.failed, parts.unproven) == ([], [])
    assert "NOT AUDITED: no vulnerability database reachable, a stated caveat" in parts.proven[1]
    assert (
        "pip-audit: NOT AUDITED: vulnerability database unreachable, 9 of 9 packages not "
        "audited — not a finding; set SUPPLY_CHAIN_REQUIRE_VULN_DB=1 to fail on it"
    ) in parts.evidence


def test_not_audited_fails_when_the_database_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_VULN_DB, "1")
    parts = judged(gate_report(audit="NOT AUDITED"))
    assert parts.failed == ["the dependency audit (pip-audit) NOT AUDITED, required"]
    assert parts.proven == ["SAST (bandit) passed"]


def plant_ci_report(root: Path, report: dict[str, Any]) -> None:
    path = root / SUPPLY_CHAIN_REPORT
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(report))


def test_a_fresh_ci_report_is_read_instead_of_running_the_gate(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", sources_at=time.time() - HOUR)
    plant_ci_report(root, gate_report(sast="FAIL"))
    gate = SupplyChainGate(root, tmp_path)
    assert gate.process is None
    parts = _Parts()
    gate.judge(parts)
    assert parts.failed == ["SAST (bandit) failed"]
    assert parts.evidence[0].startswith("CI's .ci/out/supply-chain.json: bandit FAIL")


def test_a_stale_ci_report_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tree without the gate: the stale report is set aside and nothing runs.
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    root = tree(tmp_path / "tree", sources_at=time.time())
    plant_ci_report(root, gate_report(at=time.time() - HOUR))
    gate = SupplyChainGate(root, tmp_path)
    assert (gate.ci_report, gate.process) == (None, None)
    parts = _Parts()
    gate.judge(parts)
    assert parts.proven == []
    assert parts.unproven == [
        "SAST and the dependency audit (bandit, pip-audit not installed: scripts/bootstrap tools)"
    ]


# A stand-in for `python -m tests.dast`: writes one JUnit report per role it was given, with
# the failure planted in FAIL (an operation name), exits as scripts/dast would.
FAKE_DAST = """
import os, sys
from pathlib import Path
out = Path(os.environ["DAST_REPORT_DIR"])
roles = ["anonymous"] + sorted(k[11:].lower() for k in os.environ if k.startswith("DAST_TOKEN_"))
failing = os.environ.get("FAKE_DAST_FAIL")
if os.environ.get("FAKE_DAST_USAGE"):
    print("dast: error: usage", file=sys.stderr)
    sys.exit(2)
for role in roles:
    failure = f'<failure message="ST100 Server error">500</failure>' if failing else ""
    (out / f"{role}.xml").write_text(
        f'<testsuites><testsuite name="{role}"><testcase name="GET /ok"/>'
        f'<testcase name="{failing or "GET /fine"}">{failure}</testcase></testsuite></testsuites>'
    )
print(sys.argv[1:])
sys.exit(1 if failing else 0)
"""


@pytest.fixture
def fake_dast(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_dast.py"
    script.write_text(FAKE_DAST)
    return [str(script)]


def dast_parts(tmp_path: Path, fake: list[str]) -> _Parts:
    parts = _Parts()
    tokens = {"DAST_TOKEN_ADMIN": "a", "DAST_TOKEN_CLERK": "b"}  # pragma: allowlist secret
    run_dast(tmp_path, "http://127.0.0.1:9", tokens, parts, exclude="^/metrics$", command=fake)
    return parts


def test_a_clean_dast_of_every_role_proves_it(tmp_path: Path, fake_dast: list[str]) -> None:
    parts = dast_parts(tmp_path, fake_dast)
    assert (parts.failed, parts.unproven) == ([], [])
    assert parts.proven == ["DAST of this instance, anonymous and per role, found nothing"]
    assert "as anonymous, admin, clerk → exit 0" in parts.evidence[0]
    assert "6 operation runs, 0 failed; not tested: ^/metrics$" in parts.evidence[0]


def test_a_dast_finding_fails_the_row_naming_it(
    tmp_path: Path, fake_dast: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DAST_FAIL", "POST /api/broken")
    parts = dast_parts(tmp_path, fake_dast)
    assert parts.failed == ["DAST found 3 failure(s)"]
    assert "DAST: admin: POST /api/broken: ST100 Server error" in parts.evidence


def test_a_dast_that_cannot_run_proves_nothing(
    tmp_path: Path, fake_dast: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DAST_USAGE", "1")
    parts = dast_parts(tmp_path, fake_dast)
    assert (parts.failed, parts.proven) == ([], [])
    assert parts.unproven == ["DAST (could not run: dast: error: usage)"]


@pytest.mark.timeout(600)
def test_plt2_passes_live_and_leaves_the_instance_usable(
    instance: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole check on a real instance: the release, the locks, the supply-chain gate (run
    now, or CI's fresh report) and the DAST of the instance, as every role: ~100 s on an
    idle machine, ~190 s on a loaded one."""
    monkeypatch.delenv(REQUIRE_VULN_DB, raising=False)
    row = run_conformance(instance, [], only={"PLT-2"}).rows[0]
    assert row.verdict is Verdict.PASS, (row.observed, row.evidence)
    for part in (
        "a signed release verifies and one altered byte fails it",
        "every locked distribution pinned by hash",
        "SAST (bandit) passed",
        "the dependency audit (pip-audit)",
        "DAST of this instance, anonymous and per role, found nothing",
    ):
        assert part in row.observed
    dast = next(line for line in row.evidence if line.startswith("DAST ("))
    assert "exit 0" in dast, dast
    assert ", 0 failed" in dast, dast
    # The DAST fuzzed as real people, the admin among them: every switch is still as it was.
    admin = instance.session(instance.users_with("admin", instance.tenants()[-1])[0])
    state = admin.get("/api/assistant/killswitch").json()
    assert (state["engaged"], state["tools"]) == (False, [])
    assert admin.get("/api/assistant/dlp").json() == {"forbidden": []}
