"""`ramparts reconcile`, run as an operator runs it: against a real localstripe process and
real books, exit 0 when clean, 1 on drift (a table, or JSON, and an alert), 2 with one line
for a bad date or no PSP key; the PSP out of reach is one line and exit 1."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from ramparts.payments.psp import API_KEY_SECRET
from ramparts.payments.sandbox import SANDBOX_API_KEY
from tests.conftest import cli_kms, free_port
from tests.payments.reconciliation import World
from tests.payments.test_reconcile import alert_hook  # noqa: F401 - a fixture
from tests.test_cli import owner_env, run

pytestmark = pytest.mark.anyio


async def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(partial(run, *args, env=env))


def _one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ramparts: error: ")
    return lines[0]


async def test_reconcile_exits_by_what_it_found(
    tmp_path: Path,
    world: World,
    alert_hook: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    url, alerts = alert_hook
    env = owner_env(
        tmp_path,
        world.urls,
        RAMPARTS_PSP_API_BASE=world.sandbox.api_base,
        RAMPARTS_ALERT_WEBHOOK_URL=url,
        COLUMNS="250",  # the table's rows on one line each
    )
    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()

    # No PSP key in the KMS (payments are not set up), a date that is not one, and one that
    # has not begun: exit 2, one line each. (Runs that do not depend on each other run side
    # by side: each start of the command costs seconds on a loaded machine.)
    unset, bad, early = await _together(
        ("reconcile",), ("reconcile", "--date", "2024-13-01"), ("reconcile", "--date", tomorrow),
        env=env,
    )  # fmt: skip
    assert API_KEY_SECRET in _one_line(unset, 2)
    assert "YYYY-MM-DD" in _one_line(bad, 2)
    assert "has not begun" in _one_line(early, 2)
    cli_kms(tmp_path).write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))

    tenant = world.tenant()
    paid = await world.deposit(tenant, 8_000)
    await world.refund(paid, 3_000)
    clean, yesterday = await _together(
        ("reconcile", "--date", today.isoformat(), "--json"), ("reconcile",), env=env
    )
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["status"] == "clean"
    assert report["day"] == today.isoformat()
    assert (report["psp_transactions"], report["ledger_entries"]) == (2, 2)
    assert (report["psp_objects"], report["matched"]) == (3, 3)  # charge, refund, payment
    assert report["drift"] == []
    # The default is yesterday, which saw nothing.
    assert yesterday.returncode == 0, yesterday.stderr
    assert f"{(today - timedelta(days=1)).isoformat()}: 0 PSP balance" in yesterday.stdout
    assert "clean" in yesterday.stdout
    assert alerts == []

    off = await world.deposit(tenant, 1_000, in_ledger=999)
    # The PSP out of reach: one line, exit 1.
    away = {**env, "RAMPARTS_PSP_API_BASE": f"http://127.0.0.1:{free_port()}"}
    people, unreachable = await asyncio.gather(
        _run("reconcile", "--date", today.isoformat(), env=env),
        _run("reconcile", "--date", today.isoformat(), env=away),
    )
    assert people.returncode == 1, people.stderr
    assert "Reconciliation drift" in people.stdout
    row = next(line for line in people.stdout.splitlines() if off.charge in line)
    assert "amount_mismatch" in row
    assert "1000 EUR succeeded" in row
    assert "999 EUR" in row
    assert str(tenant) in row
    assert "1 drift item(s)" in people.stdout
    assert [alert["kind"] for alert in alerts] == ["reconciliation_drift"]
    assert alerts[0]["details"]["psp_ids"] == [off.charge]
    assert "list balance transactions failed at the PSP" in _one_line(unreachable, 1)


async def _together(
    *commands: tuple[str, ...], env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    return list(await asyncio.gather(*(_run(*command, env=env) for command in commands)))


def test_reconcile_has_help(tmp_path: Path) -> None:
    from tests.conftest import cli_env  # noqa: PLC0415

    done = run("reconcile", "--help", env=cli_env(tmp_path))
    assert done.returncode == 0
    assert "--date" in done.stdout
    assert "--json" in done.stdout
