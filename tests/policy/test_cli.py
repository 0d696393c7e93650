"""`ramparts policy validate | diff | snapshot`, run as a reviewer runs them: over the
runtime's policies and the selected apps'."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ramparts.policy.engine import POLICY_DIR
from ramparts.quotes.app import QUOTES
from tests.conftest import cli_env
from tests.test_cli import run

assert QUOTES.policy is not None
QUOTES_FOLDER = QUOTES.policy.folder


def copy_policies(
    tmp_path: Path, name: str, source: Path = POLICY_DIR, added: str | None = None
) -> Path:
    """A proposed policy folder: a copy of `source`'s policies, with `added` in a file of its
    own."""
    target = tmp_path / name
    shutil.copytree(source / "policies", target / "policies")
    if added is not None:
        (target / "policies" / "99-added.cedar").write_text(added)
    return target


def test_validate_accepts_the_shipped_policies_and_refuses_unknown_names(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    ok = run("policy", "validate", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "valid": True,
        "directory": "the shipped policies",
        "apps": ["quotes"],
    }

    typo = (
        '@id("typo")\npermit (principal, action == Quotes::Action::"quote.read", resource)\n'
        'when { resource.colour == "red" };\n'
    )
    broken = copy_policies(tmp_path, "broken", QUOTES_FOLDER, typo)
    refused = run("policy", "validate", str(broken), "--app", "quotes", env=env)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "attribute `colour` on entity type `Quotes::Quote` not found" in line

    unknown_type = copy_policies(
        tmp_path,
        "unknown-type",
        added='@id("typo")\nforbid (principal is Admin, action, resource);',
    )
    assert run("policy", "validate", str(unknown_type), env=env).returncode == 1
    missing = run("policy", "validate", str(tmp_path / "nowhere"), env=env)
    assert missing.returncode == 2
    not_an_app = run("policy", "validate", str(broken), "--app", "nothing", env=env)
    assert not_an_app.returncode == 2
    assert "--app nothing: not a selected app with policies (selected: quotes)" in (
        not_an_app.stderr
    )


def test_an_app_permit_beyond_its_namespace_does_not_validate(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    greedy = copy_policies(
        tmp_path,
        "greedy",
        QUOTES_FOLDER,
        '@id("buyers-read-the-audit")\n'
        'permit (principal in Role::"buyer", action == Action::"audit.read", resource);\n',
    )
    refused = run("policy", "validate", str(greedy), "--app", "quotes", env=env)
    assert refused.returncode == 1
    assert "policy 'buyers-read-the-audit' names Action::\"audit.read\"" in refused.stderr


def test_diff_lists_every_decision_a_change_moves(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    old = copy_policies(tmp_path, "old")
    new = copy_policies(tmp_path, "new")
    boundaries = new / "policies" / "00-boundaries.cedar"
    # A reviewer's nightmare: someone deletes the wall that keeps restricted data behind a
    # WebAuthn key. Every snapshot that has restricted cells moves: the runtime's and the app's.
    text = boundaries.read_text()
    start = text.index('@id("restricted-needs-webauthn")')
    boundaries.write_text(text[:start] + text[text.index("};", start) + 2 :])
    diff = run("policy", "diff", str(old), str(new), "--json", env=env)
    assert diff.returncode == 0, diff.stderr
    moved = json.loads(diff.stdout)["changes"]
    assert moved
    assert {(c["sensitivity"], c["amr"], c["old"], c["new"]) for c in moved} == {
        ("restricted", "otp", "deny", "allow")
    }
    assert {c["snapshot"] for c in moved} == {"runtime", "quotes"}
    assert ("admin", "audit.read") in {(c["role"], c["action"]) for c in moved}
    assert ("buyer", "Quotes::quote.create") in {(c["role"], c["action"]) for c in moved}
    assert "decision(s) change" in run("policy", "diff", str(old), str(new), env=env).stdout
    same = run("policy", "diff", str(old), str(old), "--json", env=env)
    assert json.loads(same.stdout) == {"changes": []}


def test_diff_of_an_app_s_policies_moves_only_its_snapshot(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    old = copy_policies(tmp_path, "old", QUOTES_FOLDER)
    new = copy_policies(tmp_path, "new", QUOTES_FOLDER)
    roles = new / "policies" / "10-roles.cedar"
    # Finance's permit to move money goes: the runtime's money walls stay, the permit does not.
    text = roles.read_text()
    start = text.index('@id("finance-moves-money")')
    roles.write_text(text[:start] + text[text.index(");", start) + 2 :])
    diff = run("policy", "diff", str(old), str(new), "--app", "quotes", "--json", env=env)
    assert diff.returncode == 0, diff.stderr
    moved = json.loads(diff.stdout)["changes"]
    assert {(c["snapshot"], c["role"], c["old"], c["new"]) for c in moved} == {
        ("quotes", "finance", "allow", "deny")
    }
    assert {c["action"] for c in moved} == {
        "Quotes::deposit.charge",
        "Quotes::refund.issue",
        "Quotes::disbursement.approve",
    }


def test_snapshot_check_passes_on_the_shipped_policies(tmp_path: Path) -> None:
    checked = run("policy", "snapshot", "--check", env=cli_env(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no decision changes" in checked.stdout
