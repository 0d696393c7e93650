"""What every drill stands on: its own fresh instance (started, signed into, removed), a running
one reached with `--url`, the control list, and the commands' refusals of bad usage."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import psycopg
import pytest

from ramparts.db.engine import libpq
from ramparts.tabletop.conformance.controls import CONTROLS
from ramparts.tabletop.instance import own_instance, running_instance
from ramparts.tabletop.target import DrillError, SignInError, Target
from tests.conftest import cli_env
from tests.test_cli import run

# Each test starts and plays real instances (a `ramparts demo` each, then the drill): minutes
# on a loaded CI machine, past the suite's default hang guard of 120 s.
pytestmark = pytest.mark.timeout(600)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "controls.md"


def test_every_control_of_the_checklist_has_a_row() -> None:
    documented = re.findall(r"^\| ([A-Z]+-\d+) \|", DOCS.read_text(), re.MULTILINE)
    assert documented == list(CONTROLS)
    assert len(CONTROLS) == 24


def test_its_own_instance_is_fresh_signs_people_in_and_leaves_nothing(
    drill_instance: Callable[..., AbstractContextManager[Target]],
) -> None:
    with drill_instance() as target:
        home = Path(target.script.path).parent if target.script else None
        assert home is not None
        assert home.is_dir()
        assert oct(home.stat().st_mode & 0o777) == "0o700"
        assert {"acme", "globex"} <= set(target.tenants())
        assert target.description["apps"] == "expenses, quotes"
        # The real login: password, TOTP, PKCE code; twice within one TOTP step.
        first = target.session("buyer@acme.test")
        again = target.sign_in("buyer@acme.test")
        assert first.get("/api/quotes").status_code == 200
        assert again.get("/api/quotes").status_code == 200
        assert first.access_token != again.access_token
        with pytest.raises(SignInError, match="password was refused"):
            target.sign_in("seller@globex.test", password="not-the-password")
        with target.runtime() as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("ramparts_app",)
        assert target.urls is not None
        assert target.urls.owner_url is not None
        database = target.urls.owner_url
        port = int(target.base_url.rsplit(":", 1)[1])
    assert not home.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    with psycopg.connect(libpq(database.set(database="postgres")), autocommit=True) as conn:
        left = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database.database,)
        ).fetchone()
    assert left is None


def test_an_instance_that_cannot_start_is_one_clear_error() -> None:
    refused = pytest.raises(DrillError, match=r"stopped while starting: .*dev profile")
    with refused, own_instance(env={"RAMPARTS_PROFILE": "prod"}):
        pass


def test_a_running_instance_is_reached_with_its_credentials(
    instance: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "creds.json"
    credentials.write_text(json.dumps(instance.report))
    monkeypatch.setenv("RAMPARTS_HOME", str(tmp_path / "home"))
    with running_instance(instance.base_url, credentials=credentials) as target:
        assert target.script is None
        assert target.urls is None
        assert target.session("finance@acme.test").get("/api/payments").status_code == 200
    unreachable = pytest.raises(DrillError, match="cannot be reached")
    with unreachable, running_instance("http://127.0.0.1:9", credentials=credentials):
        pass
    unreadable = pytest.raises(DrillError, match="cannot read the demo credentials")
    with unreadable, running_instance(instance.base_url, credentials=tmp_path / "missing.json"):
        pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["conformance", "--control", "XX-9"], "--control XX-9: not a control id"),
        (["tabletop", "--script", "model.json"], "--credentials and --script go with --url"),
        (
            ["redteam", "--url", "http://127.0.0.1:9", "--database-server", "postgresql://x"],
            "--database-server makes an instance of its own",
        ),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(*args, env=cli_env(tmp_path))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"ramparts: error: {message}")


def test_an_unreachable_instance_is_one_line_and_exit_1(tmp_path: Path) -> None:
    credentials = tmp_path / "creds.json"
    credentials.write_text('{"users": [], "tenants": []}')
    result = run(
        "conformance", "--url", "http://127.0.0.1:9", "--credentials", str(credentials),
        env=cli_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("ramparts: error: the instance at http://127.0.0.1:9 cannot be reached")
    )


def test_the_instance_answers_over_real_http(instance: Target) -> None:
    assert httpx.get(f"{instance.base_url}/readyz").status_code == 200
