"""Point-in-time recovery with the WAL-archive setup of `deploy/postgres/`, on a PostgreSQL 15
cluster of the test's own (the machine's server is never reconfigured).

Base backup, write A, note the time, write B, switch WAL; then the base backup is recovered
from the archive to the noted time into a new data directory: it holds A and not B.

And the restore drill on such a cluster: however healthy the archive, the drill replays no WAL,
so its RPO is the age of the backup it restored, and the archive's lag is reported apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url
from typer.testing import CliRunner

from ramparts.apps import installed_apps, migration_branches
from ramparts.backup.drill import achieved_rpo, pitr_lag
from ramparts.backup.manifest import read_manifest
from ramparts.backup.services import take_backup
from ramparts.cli import app
from ramparts.db.engine import DatabaseUrls, derive_app_url, libpq
from ramparts.db.migrate import upgrade
from tests.conftest import cli_env, cli_kms, free_port

BIN = Path("/usr/lib/postgresql/15/bin")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postgres"
DOCUMENTED_ARCHIVE = "/var/lib/postgresql/wal-archive"

pytestmark = pytest.mark.skipif(not (BIN / "initdb").exists(), reason="no PostgreSQL 15 here")


def _as_postgres(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL binary, as the `postgres` user when we are root (they refuse root)."""
    user = "postgres" if os.geteuid() == 0 else None
    done = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=user,
    )
    assert done.returncode == 0, f"{args[0]}: {done.stderr}"
    return done


@dataclass
class Cluster:
    data: Path
    port: int
    sockets: Path

    def start(self) -> None:
        _as_postgres(BIN / "pg_ctl", "-D", self.data, "-l", self.data / "log", "-w", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            database="postgres",
            query={"host": str(self.sockets), "port": str(self.port)},
        )

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.sockets),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        )


@pytest.fixture
def workspace() -> Iterator[Path]:
    # Under /tmp, not pytest's per-user directory, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="ramparts-pitr-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _documented(name: str, archive: Path) -> str:
    """A file of deploy/postgres/ with only the archive's path changed."""
    text = (DEPLOY / name).read_text()
    assert DOCUMENTED_ARCHIVE in text
    return text.replace(DOCUMENTED_ARCHIVE, str(archive))


def _settings(cluster: Cluster, listen: str = "") -> str:
    return (
        f"\nport = {cluster.port}\nlisten_addresses = '{listen}'\n"
        f"unix_socket_directories = '{cluster.sockets}'\n"
    )


def _append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def _archiving_primary(workspace: Path, listen: str = "") -> tuple[Cluster, Path]:
    """A new cluster archiving its WAL with the documented settings (not started), and the
    archive's directory."""
    archive = workspace / "wal-archive"
    for folder in (archive, workspace / "sockets"):
        _as_postgres("mkdir", "-m", "0700", folder)
    primary = Cluster(workspace / "primary", free_port(), workspace / "sockets")
    _as_postgres(BIN / "initdb", "-D", primary.data, "-U", "postgres", "--auth=trust")
    conf = primary.data / "postgresql.conf"
    _append(conf, _documented("wal-archive.conf", archive) + _settings(primary, listen))
    return primary, archive


def test_recovery_to_a_time_between_two_writes_holds_the_first_only(workspace: Path) -> None:
    primary, archive = _archiving_primary(workspace)
    restored = Cluster(workspace / "restored", free_port(), workspace / "sockets")
    primary.start()
    try:
        _as_postgres(
            BIN / "pg_basebackup",
            "-D",
            restored.data,
            "-h",
            primary.sockets,
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "--checkpoint=fast",
        )
        with primary.connect() as conn:
            conn.execute("CREATE TABLE writes (what text NOT NULL)")
            conn.execute("INSERT INTO writes VALUES ('A')")
            time.sleep(0.2)
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            between = row[0]
            time.sleep(0.2)
            conn.execute("INSERT INTO writes VALUES ('B')")
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert segment is not None
            _wait_archived(conn, segment[0])
        # With the archive working, the drill's RPO is still the restored backup's age (the
        # drill replays no WAL); the archive's lag is reported apart, as not drilled.
        rpo = achieved_rpo(primary.url, datetime(2000, 1, 1, tzinfo=UTC), target=60)
        assert (rpo.source, rpo.met) == ("backup-snapshot", False)
        assert rpo.achieved > 20 * 365 * 86400
        lag = pitr_lag(primary.url)
        assert (lag.archiving, lag.healthy, lag.last_failed_wal) == (True, True, None)
        assert lag.last_archived_wal is not None
        assert lag.last_archived_wal >= segment[0]
        assert lag.last_archived_age is not None
        assert 0 <= lag.last_archived_age < 30
        assert lag.as_json()["drilled"] is False
    finally:
        primary.stop()

    _append(
        restored.data / "postgresql.auto.conf",
        _documented("pitr-restore.conf", archive)
        + f"recovery_target_time = '{between.isoformat()}'\n"
        + _settings(restored),
    )
    _as_postgres("touch", restored.data / "recovery.signal")
    restored.start()
    try:
        with restored.connect() as conn:
            _wait_promoted(conn)
            assert conn.execute("SELECT what FROM writes").fetchall() == [("A",)]
    finally:
        restored.stop()


def test_an_old_backup_fails_the_rpo_target_however_healthy_the_wal_archive(
    workspace: Path, tmp_path: Path
) -> None:
    # The drill restores a pg_dump and replays no WAL: the archive's seconds of lag are no
    # recovery point it tested. A backup two hours old misses a 15-minute target.
    primary, _ = _archiving_primary(workspace, listen="127.0.0.1")
    primary.start()
    try:
        with primary.connect() as conn:
            conn.execute("CREATE DATABASE ramparts")
        owner = make_url(f"postgresql+psycopg://postgres@127.0.0.1:{primary.port}/ramparts")
        urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
        upgrade(urls, migration_branches(installed_apps().values()))
        home = tmp_path / "home"
        home.mkdir()
        kms = cli_kms(home)
        backup = take_backup(owner, kms, tmp_path / "backups")
        manifest = read_manifest(backup)
        old = (datetime.fromisoformat(manifest.snapshot_at) - timedelta(hours=2)).isoformat()
        aged = replace(manifest, snapshot_at=old).signed(manifest.data_key(kms))
        backup.write_text(json.dumps(aged.as_json()))
        with primary.connect() as conn:
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert segment is not None
            _wait_archived(conn, segment[0])

        env = cli_env(home, RAMPARTS_DATABASE_URL=libpq(owner))
        done = CliRunner().invoke(app, ["drill", "--backup", str(backup), "--json"], env=env)
        assert done.exit_code == 1, (done.output, done.exception)
        report = json.loads(done.stdout)
        assert report["restore"]["count_mismatches"] == {}
        assert report["audit"]["intact"] is True
        assert report["ledger"]["intact"] is True
        assert (report["passed"], report["rto"]["met"]) == (False, True)
        assert (report["rpo"]["source"], report["rpo"]["met"]) == ("backup-snapshot", False)
        assert report["rpo"]["achieved_seconds"] >= 7200
        lag = report["pitr_lag"]
        assert (lag["drilled"], lag["archiving"], lag["healthy"]) == (False, True, True)
        assert lag["last_archived_wal"] >= segment[0]
        assert 0 <= lag["last_archived_age_seconds"] < 900

        done = CliRunner().invoke(app, ["drill", "--backup", str(backup)], env=env)
        assert done.exit_code == 1, (done.output, done.exception)
        assert "drill failed" in done.stdout
        [row] = [line for line in done.stdout.splitlines() if "PITR lag" in line]
        assert "not drilled" in row
        assert "WAL archive:" in row
    finally:
        primary.stop()


def _wait_archived(conn: psycopg.Connection, segment: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT last_archived_wal >= %s, failed_count FROM pg_stat_archiver", (segment,)
        ).fetchone()
        assert row is not None
        assert row[1] == 0, "the documented archive_command failed"
        if row[0]:
            return
        time.sleep(0.1)
    pytest.fail(f"{segment} was not archived within {within} s")


def _wait_promoted(conn: psycopg.Connection, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if row is not None and not row[0]:
            return
        time.sleep(0.1)
    pytest.fail(f"the restored server did not finish recovery within {within} s")
