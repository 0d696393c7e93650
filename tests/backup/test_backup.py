"""`ramparts backup`, `restore` and `drill` against a seeded database on the real server.

Most runs are in-process (the command functions, through Typer's runner) to keep the file fast;
one run per command goes through the installed `ramparts` executable, as an operator runs it,
to see its exit code and its one-line refusal.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

from ramparts.backup.manifest import BackupRefusedError, Manifest, read_manifest
from ramparts.backup.pgtools import BackupToolError, find_tool
from ramparts.backup.services import restore_backup, take_backup
from ramparts.cli import app
from ramparts.config import APP_ROLE
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, derive_app_url, libpq
from ramparts.payments.ledger import Ledger
from tests.conftest import cli_env, cli_kms
from tests.test_cli import run

pytestmark = pytest.mark.usefixtures("seeded")


class Seeded:
    """A migrated, seeded database with chained and checkpointed audit events, a ledger
    book, and the CLI environment (its RAMPARTS_HOME holds the KMS) that reaches it."""

    def __init__(self, urls: DatabaseUrls, home: Path) -> None:
        self.urls = urls
        self.home = home
        self.env = cli_env(home, RAMPARTS_DATABASE_URL=libpq(urls.owner))
        self.kms: Kms = cli_kms(home)

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env=env or self.env)


@pytest.fixture(scope="module")
def seeded(
    make_database: Callable[..., DatabaseUrls], tmp_path_factory: pytest.TempPathFactory
) -> Seeded:
    world = Seeded(make_database(migrate=False), tmp_path_factory.mktemp("backup-home"))
    for command in (["migrate"], ["seed-demo"], ["audit", "sequence"], ["audit", "checkpoint"]):
        done = world.invoke(*command)
        assert done.exit_code == 0, (command, done.output, done.exception)
    asyncio.run(_post_deposit(world.urls, _tenant(world.urls, "acme")))
    return world


def _tenant(urls: DatabaseUrls, slug: str) -> Any:
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute("SELECT id FROM tenants WHERE slug = %s", (slug,)).fetchone()
    assert row is not None
    return row[0]


async def _post_deposit(urls: DatabaseUrls, tenant: Any) -> None:
    database = Database(urls.app, pool_size=1)
    try:
        async with database.tenant_session(tenant) as session:
            await Ledger().record_deposit(session, payment="pi_b", amount=5_000, currency="EUR")
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def backup(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One backup of the seeded database: its manifest."""
    out = tmp_path_factory.mktemp("backups")
    done = seeded.invoke("backup", "--output", str(out), "--json")
    assert done.exit_code == 0, (done.output, done.exception)
    return Path(json.loads(done.stdout)["manifest"])


@pytest.fixture
def fresh(make_database: Callable[..., DatabaseUrls]) -> URL:
    return make_database(migrate=False).owner


def _relations(url: URL) -> int:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchone()
    return int(row[0]) if row else -1


def _copy(backup: Path, into: Path) -> Path:
    """The backup's two files, copied: a copy to damage."""
    into.mkdir()
    manifest = read_manifest(backup)
    for name in (backup.name, manifest.data_file):
        (into / name).write_bytes((backup.parent / name).read_bytes())
    return into / backup.name


def _rewrite(path: Path, manifest: Manifest) -> None:
    path.write_text(json.dumps(manifest.as_json()))


def test_backup_writes_an_encrypted_archive_and_a_signed_manifest(
    seeded: Seeded, backup: Path
) -> None:
    manifest = read_manifest(backup)
    archive = (backup.parent / manifest.data_file).read_bytes()
    assert len(archive) == manifest.data_bytes
    assert sorted(p.name for p in backup.parent.iterdir()) == sorted(
        [backup.name, manifest.data_file]
    )  # no temporary file left
    for plain in (b"acme.test", b"PGDMP", b"audit_events"):  # no row, no archive header
        assert plain not in archive
    assert manifest.tables["public.tenants"] == 2
    assert manifest.tables["public.ledger_entries"] == 1
    assert manifest.tables["public.audit_checkpoints"] >= 1
    assert manifest.wrapped_key.startswith(b"backup:v1:")
    with psycopg.connect(libpq(seeded.urls.owner)) as conn:
        row = conn.execute(
            "SELECT current_database(), system_identifier::text FROM pg_control_system()"
        ).fetchone()
    assert row == (manifest.database.name, manifest.database.system_identifier)
    assert manifest.data_key(seeded.kms)  # the signature verifies under the KMS
    # Readable by their owner only: the manifest says how many rows of what the database
    # holds, and neither file is anyone else's to copy.
    for name in (backup.name, manifest.data_file):
        assert (backup.parent / name).stat().st_mode & 0o077 == 0, name


def test_restore_into_a_fresh_database_keeps_rows_grants_and_tenant_isolation(
    seeded: Seeded, backup: Path, fresh: URL
) -> None:
    done = seeded.invoke("restore", str(backup), "--database-url", libpq(fresh), "--json")
    assert done.exit_code == 0, (done.output, done.exception)
    report = json.loads(done.stdout)
    assert report["restored"] is True
    assert report["count_mismatches"] == {}
    assert report["schema_heads_match"] is True
    assert report["schema_missing"] == []
    assert report["rows"] == sum(read_manifest(backup).tables.values())
    assert report["source"]["name"] == seeded.urls.owner.database

    # The runtime role connects to the restored database and is held to its tenant by RLS.
    app_url = derive_app_url(fresh)
    acme, globex = _tenant(seeded.urls, "acme"), _tenant(seeded.urls, "globex")

    async def as_runtime() -> tuple[set[Any], set[Any], int]:
        database = Database(app_url, pool_size=1)
        try:
            await database.verify_runtime_role()  # powerless, owns nothing
            seen = []
            for tenant in (acme, globex):
                async with database.tenant_session(tenant) as session:
                    rows = await session.execute(text("SELECT DISTINCT tenant_id FROM users"))
                    seen.append({row[0] for row in rows})
            async with database.session() as session:
                nobody = (await session.execute(text("SELECT count(*) FROM users"))).scalar()
            return seen[0], seen[1], int(nobody or 0)
        finally:
            await database.dispose()

    assert asyncio.run(as_runtime()) == ({acme}, {globex}, 0)
    with psycopg.connect(libpq(fresh)) as conn:
        connect = conn.execute(
            "SELECT has_database_privilege('public', current_database(), 'CONNECT'), "
            "has_database_privilege(%s, current_database(), 'CONNECT'), "
            "has_database_privilege(%s, current_database(), 'TEMPORARY')",
            (APP_ROLE, APP_ROLE),
        ).fetchone()
    assert connect == (False, True, False)

    # A second restore into the same, now populated, database is refused, changing nothing.
    tables = _relations(fresh)
    again = seeded.invoke("restore", str(backup), "--database-url", libpq(fresh))
    assert isinstance(again.exception, BackupRefusedError)
    assert str(again.exception) == (
        f"database {fresh.database!r} is not empty; restore only into a fresh one"
    )
    assert _relations(fresh) == tables


#: What a "fresh" database may hold that outlives a restore: no table among them, so a check
#: for relations and schemas alone lets each through.
PLANTED = {
    # CVE-2018-1058: an exact match in public beats pg_catalog.lower(text) for a varchar.
    "a function shadowing a built-in": "CREATE FUNCTION public.lower(varchar) RETURNS text "
    "LANGUAGE sql AS 'SELECT current_user::text'",
    "default privileges for everyone": "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
    "a large object": "SELECT lo_create(42)",
    "an enum type": "CREATE TYPE public.mood AS ENUM ('hostile')",
    "a system function granted out": "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO PUBLIC",
    "public open for creation": "GRANT CREATE ON SCHEMA public TO PUBLIC",
    "a database setting": "DO $$ BEGIN EXECUTE format("
    "'ALTER DATABASE %I SET search_path = public, pg_catalog', current_database()); END $$",
    "connect granted to another role": "DO $$ BEGIN EXECUTE format("
    "'GRANT CONNECT ON DATABASE %I TO pg_monitor', current_database()); END $$",
}


@pytest.mark.parametrize("planted", PLANTED.values(), ids=PLANTED.keys())
def test_restore_refuses_a_database_that_holds_anything_but_no_table(
    seeded: Seeded, backup: Path, fresh: URL, planted: str
) -> None:
    with psycopg.connect(libpq(fresh), autocommit=True) as conn:
        conn.execute(planted)
    with pytest.raises(BackupRefusedError) as refused:
        restore_backup(backup, fresh, seeded.kms)
    assert str(refused.value) == (
        f"database {fresh.database!r} is not empty; restore only into a fresh one"
    )
    assert _relations(fresh) == 0


def test_restore_refuses_a_database_owned_by_another_role(
    seeded: Seeded, backup: Path, fresh: URL
) -> None:
    # Its owner owns schema public (PostgreSQL 15) and could shadow or drop what is restored.
    with psycopg.connect(libpq(fresh), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{fresh.database}" OWNER TO pg_monitor')
    with pytest.raises(BackupRefusedError) as refused:
        restore_backup(backup, fresh, seeded.kms)
    assert str(refused.value) == (
        f"database {fresh.database!r} is owned by pg_monitor; restore as its owner"
    )
    assert _relations(fresh) == 0


def _refused(seeded: Seeded, manifest: Path, target: URL, kms: Kms | None = None) -> str:
    with pytest.raises(BackupRefusedError) as refused:
        restore_backup(manifest, target, kms or seeded.kms)
    assert _relations(target) == 0  # nothing was restored
    return str(refused.value)


def test_one_changed_byte_in_the_archive_is_refused_before_restoring(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    copy = _copy(backup, tmp_path / "copy")
    archive = copy.parent / read_manifest(copy).data_file
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    assert "SHA-256 differs" in _refused(seeded, copy, fresh)


def test_an_archive_that_never_ends_is_refused_before_restoring(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    # Whoever can write the backup's directory swaps the archive for an endless stream (a
    # link to /dev/zero, a FIFO): the check must end, not read or wait forever.
    copy = _copy(backup, tmp_path / "copy")
    archive = copy.parent / read_manifest(copy).data_file
    archive.unlink()
    archive.symlink_to("/dev/zero")
    assert "not a regular file" in _refused(seeded, copy, fresh)
    archive.unlink()
    os.mkfifo(archive)
    assert "not a regular file" in _refused(seeded, copy, fresh)


def test_an_edited_manifest_is_refused_before_restoring(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    copy = _copy(backup, tmp_path / "copy")
    body = json.loads(copy.read_text())
    body["tables"]["public.tenants"] = 3
    copy.write_text(json.dumps(body))
    assert "signature does not verify" in _refused(seeded, copy, fresh)

    # The id names the data key's KMS context: changing it makes the key unusable.
    body = json.loads(backup.read_text())
    body["backup_id"] = "20200101T000000Z-00000000"
    copy.write_text(json.dumps(body))
    assert "does not open with this KMS" in _refused(seeded, copy, fresh)

    copy.write_text('{"format": "ramparts-backup/1"}')
    assert "not a valid ramparts-backup/1 manifest" in _refused(seeded, copy, fresh)


def test_a_manifest_signed_by_another_key_is_refused_before_restoring(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    # Re-signed under a key of the forger's own (the archive's hash matched to a new one).
    copy = _copy(backup, tmp_path / "copy")
    forged = replace(read_manifest(copy), tables={"public.tenants": 2})
    _rewrite(copy, forged.signed(secrets.token_bytes(32)))
    assert "signature does not verify" in _refused(seeded, copy, fresh)

    # A whole backup made under another KMS (another install's keys) does not open here.
    other_home = tmp_path / "other"
    made = seeded.invoke(
        "backup",
        "--output",
        str(tmp_path / "other-backups"),
        "--json",
        env=cli_env(other_home, RAMPARTS_DATABASE_URL=libpq(seeded.urls.owner)),
    )
    assert made.exit_code == 0, (made.output, made.exception)
    foreign = Path(json.loads(made.stdout)["manifest"])
    assert "does not open with this KMS" in _refused(seeded, foreign, fresh)
    refused = run("restore", str(foreign), "--database-url", libpq(fresh), env=seeded.env)
    assert refused.returncode == 1
    assert refused.stderr == (
        "ramparts: error: the backup's key does not open with this KMS: made under another "
        "KMS, or its manifest was changed\n"
    )
    assert _relations(fresh) == 0


def test_a_data_key_wrapped_under_another_kms_key_is_refused(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    # Only the `backup` key may open a backup: a blob under a tenant's or the system key,
    # whatever its context, is another protocol's (key separation, not the context alone).
    copy = _copy(backup, tmp_path / "copy")
    manifest = read_manifest(copy)
    data_key = manifest.data_key(seeded.kms)
    rewrapped = seeded.kms.wrap("system", data_key, context=Manifest.context(manifest.backup_id))
    _rewrite(copy, replace(manifest, wrapped_key=rewrapped).signed(data_key))
    assert "does not open with this KMS" in _refused(seeded, copy, fresh)


def test_the_drill_passes_on_a_seeded_database(seeded: Seeded) -> None:
    done = seeded.invoke("drill", "--json")
    assert done.exit_code == 0, (done.output, done.exception)
    report = json.loads(done.stdout)
    assert report["passed"] is True
    assert report["restore"]["count_mismatches"] == {}
    assert report["restore"]["tables"] >= 40
    chains = report["audit"]["chains"]
    assert report["audit"]["intact"] is True
    assert len(chains) == 3  # acme, globex and the system chain
    assert sum(chain["events"] for chain in chains) > 0
    assert sum(chain["checkpoints"] for chain in chains) >= 1
    assert report["ledger"]["intact"] is True
    assert [book["entries"] for book in report["ledger"]["books"]] == [1]
    assert report["rpo"]["source"] == "backup-snapshot"
    assert 0 <= report["rpo"]["achieved_seconds"] <= 900 == report["rpo"]["target_seconds"]
    assert report["pitr_lag"]["drilled"] is False  # the WAL archive's state, reported apart
    assert 0 < report["rto"]["achieved_seconds"] <= 900 == report["rto"]["target_seconds"]
    assert _drill_databases(seeded) == []  # the scratch database was dropped


def _drill_databases(seeded: Seeded) -> list[str]:
    with psycopg.connect(libpq(seeded.urls.owner)) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'ramparts_drill_%'"
            )
        ]


def test_the_drill_fails_when_a_target_is_not_met(seeded: Seeded, backup: Path) -> None:
    done = seeded.invoke("drill", "--backup", str(backup), "--rto-target", "1ms")
    assert done.exit_code == 1, (done.output, done.exception)
    assert "drill failed" in done.stdout
    assert "RTO" in done.stdout
    assert "not drilled" in done.stdout  # the PITR lag row: informational
    report = json.loads(seeded.invoke("drill", "--rpo-target", "1ms", "--json").stdout)
    assert (report["passed"], report["rpo"]["met"], report["rto"]["met"]) == (False, False, True)
    assert report["restore"]["count_mismatches"] == {}
    bad = seeded.invoke("drill", "--rpo-target", "soon")
    assert isinstance(bad.exception, ValueError)  # exit 2: bad usage
    assert str(bad.exception) == "not a duration: 'soon' (say 15m, 90s, 500ms or 1h)"


def test_the_drill_refuses_a_backup_of_another_database(
    seeded: Seeded, make_database: Callable[..., DatabaseUrls], tmp_path: Path
) -> None:
    # Signed under this KMS and intact, but of another (empty) database: restoring it says
    # nothing of the drilled one, nor does its age say what the drilled one would lose.
    other = make_database()
    foreign = take_backup(other.owner, seeded.kms, tmp_path)
    done = seeded.invoke("drill", "--backup", str(foreign), "--json")
    assert isinstance(done.exception, BackupRefusedError), (done.output, done.exception)
    cluster = read_manifest(foreign).database.system_identifier  # the same server here
    assert str(done.exception) == (
        f"backup {read_manifest(foreign).backup_id} is of database {other.owner.database!r} "
        f"of cluster {cluster}, not of {seeded.urls.owner.database!r} of cluster {cluster} "
        "(the one drilled)"
    )


def test_the_drill_rpo_is_not_met_by_a_snapshot_from_the_future(
    seeded: Seeded, backup: Path, tmp_path: Path
) -> None:
    # A snapshot time ahead of the server's clock (a skewed clock, an edited manifest) is no
    # evidence of a small RPO: its negative age must not count as met.
    copy = _copy(backup, tmp_path / "copy")
    manifest = read_manifest(copy)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _rewrite(copy, replace(manifest, snapshot_at=future).signed(manifest.data_key(seeded.kms)))
    done = seeded.invoke("drill", "--backup", str(copy), "--json")
    assert done.exit_code == 1, (done.output, done.exception)
    report = json.loads(done.stdout)
    assert report["restore"]["count_mismatches"] == {}
    assert (report["passed"], report["rpo"]["met"]) == (False, False)
    assert report["rpo"]["achieved_seconds"] < 0


def test_the_drill_fails_when_a_restored_row_count_differs(
    seeded: Seeded, backup: Path, tmp_path: Path
) -> None:
    # A backup whose archive lacks a row its (validly signed) manifest counted: what a dump
    # that silently lost data would look like.
    copy = _copy(backup, tmp_path / "copy")
    manifest = read_manifest(copy)
    tables = {**manifest.tables, "public.quotes": manifest.tables["public.quotes"] + 1}
    _rewrite(copy, replace(manifest, tables=tables).signed(manifest.data_key(seeded.kms)))
    done = seeded.invoke("drill", "--backup", str(copy), "--json")
    assert done.exit_code == 1
    report = json.loads(done.stdout)
    assert report["passed"] is False
    expected = manifest.tables["public.quotes"]
    assert report["restore"]["count_mismatches"] == {
        "public.quotes": {"expected": expected + 1, "found": expected}
    }
    assert report["audit"]["intact"] is True
    assert _drill_databases(seeded) == []


def test_the_drill_fails_when_an_audit_chain_was_broken(
    seeded: Seeded, backup: Path, fresh: URL, tmp_path: Path
) -> None:
    # A copy of the seeded database in which a superuser rewrote one chained event.
    restore_backup(backup, fresh, seeded.kms)
    with psycopg.connect(libpq(fresh), autocommit=True) as owner, owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        changed = owner.execute(
            "UPDATE audit_events SET body = replace(body, 'ramparts-cli', 'someone-else') "
            "WHERE tenant_id = %s AND seq = 1",
            (_tenant(seeded.urls, "acme"),),
        ).rowcount
    assert changed == 1
    env = cli_env(seeded.home, RAMPARTS_DATABASE_URL=libpq(fresh))
    done = seeded.invoke("drill", "--json", env=env)
    assert done.exit_code == 1, (done.output, done.exception)
    report = json.loads(done.stdout)
    assert report["restore"]["count_mismatches"] == {}
    assert report["audit"]["intact"] is False
    [broken] = [chain for chain in report["audit"]["chains"] if not chain["intact"]]
    assert broken["tenant"] == str(_tenant(seeded.urls, "acme"))
    assert broken["first_break"]["seq"] == 1
    assert report["ledger"]["intact"] is True


def test_backup_of_a_role_held_to_row_level_security_is_refused(
    seeded: Seeded, tmp_path: Path
) -> None:
    app_url = libpq(derive_app_url(seeded.urls.owner))
    done = seeded.invoke(
        "backup",
        "--output",
        str(tmp_path),
        env=cli_env(seeded.home, RAMPARTS_DATABASE_URL=app_url),
    )
    assert isinstance(done.exception, BackupToolError)
    assert "a backup needs a role that sees every row" in str(done.exception)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(autouse=True)
def _no_leftover_drills(seeded: Seeded) -> Iterator[None]:
    yield
    assert _drill_databases(seeded) == []


def test_a_dump_that_dies_halfway_leaves_no_backup(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pg_dump killed after 3 MiB of output (out of memory, a dropped connection).
    dying = tmp_path / "pg_dump"
    dying.write_text(
        "#!/bin/sh\nhead -c 3145728 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\n"
        "exit 1\n"
    )
    dying.chmod(0o755)
    monkeypatch.setattr("ramparts.backup.services.find_tool", lambda _name, _major: dying)
    out = tmp_path / "out"
    with pytest.raises(BackupToolError, match=r"^pg_dump failed: pg_dump: error: connection lost$"):
        take_backup(seeded.urls.owner, seeded.kms, out)
    assert list(out.iterdir()) == []  # no archive, no partial file, no manifest


def test_a_password_in_the_url_query_stays_off_the_tools_command_lines(
    seeded: Seeded, fresh: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libpq also takes the password as a query parameter; a command line is visible to every
    # local user (/proc/<pid>/cmdline), so it must reach pg_dump and pg_restore as PGPASSWORD.
    secret = "s3cret-" + secrets.token_hex(4)
    seen = tmp_path / "seen"
    seen.mkdir()

    def spying(name: str, major: int) -> Path:
        real = find_tool(name, major)
        spy = tmp_path / name
        spy.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$@" > {seen / name}.argv\n'
            f'printf "%s" "$PGPASSWORD" > {seen / name}.password\nexec {real} "$@"\n'
        )
        spy.chmod(0o755)
        return spy

    monkeypatch.setattr("ramparts.backup.services.find_tool", spying)
    source = seeded.urls.owner.update_query_dict({"password": secret})
    manifest = take_backup(source, seeded.kms, tmp_path / "out")
    restore_backup(manifest, fresh.update_query_dict({"password": secret}), seeded.kms)
    for tool in ("pg_dump", "pg_restore"):
        argv = (seen / f"{tool}.argv").read_text()
        assert "--dbname=" in argv
        assert secret not in argv, (tool, argv)
        assert (seen / f"{tool}.password").read_text() == secret
