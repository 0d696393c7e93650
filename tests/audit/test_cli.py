"""`ramparts audit verify | status | sequence | checkpoint | export`, run as an operator runs
them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg

from ramparts.audit.events import SYSTEM_TENANT
from ramparts.db.engine import DatabaseUrls, libpq
from tests.test_cli import owner_env, run


def test_verify_checkpoint_and_export_then_find_a_tampered_event(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    # Rotating keys twice records two events on the system chain.
    for _ in range(2):
        assert run("keys", "rotate", env=env).returncode == 0

    # Each command queued its events: verify counts them, status reports the lag, and
    # `audit sequence` chains them, as a server's sequencer would.
    waiting = run("audit", "verify", "--tenant", "system", "--json", env=env)
    assert waiting.returncode == 0, waiting.stderr
    [queued] = json.loads(waiting.stdout)["chains"]
    assert (queued["intact"], queued["events"], queued["queued"]) == (True, 0, 3)
    assert queued["oldest_queued_seconds"] > 0
    late = run("audit", "status", "--json", env={**env, "RAMPARTS_AUDIT_MAX_LAG_SECONDS": "0.001"})
    assert late.returncode == 1
    lag = json.loads(late.stdout)
    assert (lag["queued"], lag["max_lag_seconds"], lag["within_bound"]) == (3, 0.001, False)
    assert lag["chains"] == [
        {"tenant": str(SYSTEM_TENANT), "queued": 3, "oldest_seconds": lag["oldest_queued_seconds"]}
    ]
    chained = run("audit", "sequence", "--json", env=env)
    assert json.loads(chained.stdout) == {"sequenced": 3}, chained.stderr
    caught_up = run("audit", "status", "--json", env=env)
    assert caught_up.returncode == 0
    assert json.loads(caught_up.stdout) == {
        "queued": 0,
        "oldest_queued_seconds": None,
        "max_lag_seconds": 1.0,
        "within_bound": True,
        "chains": [],
    }

    verified = run("audit", "verify", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["intact"] is True
    [system] = [c for c in report["chains"] if c["tenant"] == str(SYSTEM_TENANT)]
    assert (system["events"], system["queued"]) == (3, 0)  # migrate's key, two rotations

    signed = run("audit", "checkpoint", "--json", env=env)
    assert signed.returncode == 0, signed.stderr
    checkpoints = [json.loads(line) for line in signed.stdout.splitlines()]
    assert [c["tenant"] for c in checkpoints] == [str(SYSTEM_TENANT)]
    assert checkpoints[0]["seq"] == system["events"]
    offsite = tmp_path / "checkpoints.jsonl"
    offsite.write_text(signed.stdout)
    assert run("audit", "checkpoint", "--json", env=env).stdout == ""  # nothing moved

    exported = run("audit", "export", "--tenant", "system", "--format", "jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, system["events"] + 1))
    assert all(e["action"] == "identity:signing_key:rotated" for e in events)
    assert events[1]["prev_hash"] == events[0]["hash"]

    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner, owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        owner.execute(
            "UPDATE audit_events SET body = replace(body, 'ramparts-cli', 'someone-else') "
            "WHERE tenant_id = %s AND seq = 2",
            (SYSTEM_TENANT,),
        )
    broken = run("audit", "verify", "--tenant", "system", "--json", env=env)
    assert broken.returncode == 1
    [chain] = json.loads(broken.stdout)["chains"]
    assert chain["first_break"]["seq"] == 2
    assert chain["first_break"]["kind"] == "hash_mismatch"
    human = run("audit", "verify", "--checkpoints", str(offsite), env=env)
    assert human.returncode == 1
    assert f"{SYSTEM_TENANT} seq 2" in human.stdout
    assert "hash_mismatch" in human.stdout


def test_bad_arguments_are_one_line_errors(tmp_path: Path, urls: DatabaseUrls) -> None:
    env = owner_env(tmp_path, urls)
    unknown = run("audit", "verify", "--tenant", "no-such-tenant", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "ramparts: error: no tenant 'no-such-tenant'"
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n")
    refused = run("audit", "verify", "--checkpoints", str(garbage), env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"ramparts: error: {garbage}:1: not a checkpoint")
    assert len(refused.stderr.strip().splitlines()) == 1
    wrong_format = run("audit", "export", "--format", "csv", env=env)
    assert wrong_format.returncode == 2
