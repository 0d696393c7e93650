"""PLT-2's rule for CI's evidence, which a run here cannot make: a report counts only when it is
present, says PASS (or has no failure) and is newer than the sources and locks it judges; a
failure in it fails the row. Planted reports in a planted tree; the build part is proven by
the live run (test_conformance_ai.py)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ramparts.tabletop.conformance.supply_chain import (
    DAST_REPORTS,
    SUPPLY_CHAIN_REPORT,
    _dast_reports,
    _Parts,
    _supply_chain_report,
)

HOUR = 3600.0


def tree(root: Path, *, sources_at: float) -> Path:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "requirements").mkdir()
    for path in (root / "src" / "pkg" / "mod.py", root / "requirements" / "main.lock"):
        path.write_text("x\n")
        os.utime(path, (sources_at, sources_at))
    return root


def supply_chain(root: Path, *, sast: str, audit: str, at: float) -> None:
    path = root / SUPPLY_CHAIN_REPORT
    path.parent.mkdir(parents=True)
    finished = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    report = {"finished_at": finished, "sast": {"status": sast}, "audit": {"status": audit}}
    path.write_text(json.dumps(report))


def dast(root: Path, *, failures: int, at: float) -> None:
    path = root / DAST_REPORTS / "buyer.xml"
    path.parent.mkdir(parents=True)
    path.write_text(
        f'<testsuites><testsuite name="dast" tests="12" failures="{failures}" errors="0">'
        "</testsuite></testsuites>"
    )
    os.utime(path, (at, at))


def judged(root: Path) -> _Parts:
    parts = _Parts()
    _supply_chain_report(root, parts)
    _dast_reports(root, parts)
    return parts


def test_fresh_passing_evidence_proves_its_parts(tmp_path: Path) -> None:
    now = time.time()
    root = tree(tmp_path, sources_at=now - HOUR)
    supply_chain(root, sast="PASS", audit="PASS", at=now)
    dast(root, failures=0, at=now)
    parts = judged(root)
    assert (parts.failed, parts.unproven) == ([], [])
    assert parts.proven == [
        "SAST (bandit) passed in CI",
        "the dependency audit (pip-audit) passed in CI",
        "DAST passed in CI",
    ]


@pytest.mark.parametrize(
    ("sast", "audit", "failures", "failed"),
    [
        ("FAIL", "PASS", 0, ["SAST (bandit) failed in CI"]),
        ("PASS", "FAIL", 0, ["the dependency audit (pip-audit) failed in CI"]),
        ("PASS", "PASS", 2, ["DAST found 2 failure(s)"]),
    ],
)
def test_a_failure_in_the_evidence_fails_the_row(
    tmp_path: Path, sast: str, audit: str, failures: int, failed: list[str]
) -> None:
    now = time.time()
    root = tree(tmp_path, sources_at=now - HOUR)
    supply_chain(root, sast=sast, audit=audit, at=now)
    dast(root, failures=failures, at=now)
    assert judged(root).failed == failed


def test_stale_unaudited_or_missing_evidence_proves_nothing(tmp_path: Path) -> None:
    now = time.time()
    root = tree(tmp_path, sources_at=now)
    supply_chain(root, sast="PASS", audit="NOT AUDITED", at=now - HOUR)
    parts = judged(root)
    assert parts.failed == []
    assert parts.proven == []
    assert parts.unproven == [
        "SAST (bandit) (PASS, stale)",
        "the dependency audit (pip-audit) (NOT AUDITED, stale)",
        "DAST (no CI report in dast-report/)",
    ]
