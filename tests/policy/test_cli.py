"""`ramparts policy validate | diff | snapshot`, run as a reviewer runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ramparts.policy.engine import POLICY_DIR
from tests.conftest import cli_env
from tests.test_cli import run


def copy_policies(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(POLICY_DIR / "policies", target)
    return target


def test_validate_accepts_the_shipped_policies_and_refuses_unknown_names(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    ok = run("policy", "validate", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["valid"] is True

    broken = copy_policies(tmp_path, "broken")
    (broken / "99-typo.cedar").write_text(
        '@id("typo")\npermit (principal, action == Action::"quote.read", resource)\n'
        'when { resource.colour == "red" };\n'
    )
    refused = run("policy", "validate", str(broken), env=env)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "attribute `colour` on entity type `Quote` not found" in line

    unknown_type = copy_policies(tmp_path, "unknown-type")
    (unknown_type / "99-typo.cedar").write_text(
        '@id("typo")\npermit (principal is Admin, action, resource);\n'
    )
    assert run("policy", "validate", str(unknown_type), env=env).returncode == 1
    missing = run("policy", "validate", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2


def test_diff_lists_every_decision_a_change_moves(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    old = copy_policies(tmp_path, "old")
    new = copy_policies(tmp_path, "new")
    boundaries = new / "00-boundaries.cedar"
    # A reviewer's nightmare: someone deletes the rule that keeps money away from AI tools.
    text = boundaries.read_text()
    start = text.index('@id("no-money-from-ai-tools")')
    boundaries.write_text(text[:start] + text[text.index("};", start) + 2 :])
    diff = run("policy", "diff", str(old), str(new), "--json", env=env)
    assert diff.returncode == 0, diff.stderr
    moved = json.loads(diff.stdout)["changes"]
    assert moved
    assert {(c["role"], c["channel"], c["old"], c["new"]) for c in moved} == {
        ("finance", "ai_tool", "deny", "allow")
    }
    assert {c["action"] for c in moved} == {
        "deposit.charge",
        "refund.issue",
        "disbursement.approve",
    }
    assert "decision(s) change" in run("policy", "diff", str(old), str(new), env=env).stdout
    same = run("policy", "diff", str(old), str(old), "--json", env=env)
    assert json.loads(same.stdout) == {"changes": []}
