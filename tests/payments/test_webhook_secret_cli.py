"""`ramparts psp webhook-secret rotate|list`, run as an operator runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ramparts.payments.webhook_secrets import WebhookSecrets
from tests.conftest import cli_env, cli_kms
from tests.test_cli import RAMPARTS


def ramparts(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPARTS, "psp", "webhook-secret", *args],
        env=cli_env(home),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rotate_makes_a_secret_and_keeps_the_previous_for_the_overlap(tmp_path: Path) -> None:
    first = ramparts(tmp_path, "rotate", "--json")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)["secret"]
    assert made.startswith("whsec_")
    second = ramparts(tmp_path, "rotate", "--overlap", "120", "--json")
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    listed = result["secrets"]
    assert [s["expires_at"] is None for s in listed] == [True, False]
    assert all(s["active"] for s in listed)
    # What the servers read from the KMS: the new secret first, the previous one still valid.
    store = WebhookSecrets(cli_kms(tmp_path))
    assert store.active() == [result["secret"].encode(), made.encode()]


def test_rotate_takes_the_psps_secret_from_stdin_and_never_prints_it(tmp_path: Path) -> None:
    given = "whsec_" + "k" * 32
    rotated = ramparts(tmp_path, "rotate", "--from-stdin", "--overlap", "0", stdin=given + "\n")
    assert rotated.returncode == 0, rotated.stderr
    assert given not in rotated.stdout + rotated.stderr
    assert WebhookSecrets(cli_kms(tmp_path)).active() == [given.encode()]
    listed = ramparts(tmp_path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert given not in listed.stdout
    assert len(json.loads(listed.stdout)["secrets"]) == 1


def test_rotate_refuses_a_bad_secret_or_overlap(tmp_path: Path) -> None:
    empty = ramparts(tmp_path, "rotate", "--from-stdin", stdin="\n")
    assert empty.returncode == 2
    assert "whsec_" in empty.stderr
    too_long = ramparts(tmp_path, "rotate", "--overlap", "999999999")
    assert too_long.returncode == 2
    assert "--overlap" in too_long.stderr
    assert WebhookSecrets(cli_kms(tmp_path)).stored() == []
