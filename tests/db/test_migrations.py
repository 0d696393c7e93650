"""Migrations that must refuse rather than guess; the runtime's chain and the apps' branches."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from alembic import command

from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.db.migrate import (
    ExpectedSchema,
    MigrationBranch,
    MigrationError,
    _config,
    current_revisions,
    ensure_app_role,
    head_revisions,
    upgrade,
)
from ramparts.quotes.app import QUOTES as QUOTE_APP
from tests.test_cli import owner_env, run

QUOTE_MIGRATIONS = QUOTE_APP.migrations


def test_secrets_sealed_before_the_kms_stop_the_upgrade_with_one_clear_line(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    ensure_app_role(urls)
    command.upgrade(_config(urls.owner), "0008_tenant_keys")
    with psycopg.connect(libpq(urls.owner)) as conn:  # a key sealed the old way
        conn.execute(
            "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private) "
            "VALUES ('old', 'ES256', %s, %s)",
            (json.dumps({"kty": "EC"}), b"\x01" * 60),
        )
    result = run("migrate", env=owner_env(tmp_path, urls))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "sealed before the KMS (revision 0009)" in lines[0]
    assert current_revisions(urls.owner) == {"0008_tenant_keys"}  # nothing half-done


QUOTES = MigrationBranch("quotes", QUOTE_MIGRATIONS)
#: The runtime's head: the ledger, the PSP events, then idempotency keys.
RUNTIME_HEAD = "0030_operations_gauges"
#: The quote app's head: the seller's proposal text.
QUOTES_HEAD = "0028_quote_proposal"
#: A revision of the runtime's chain from before apps had branches (the old single head).
OLD_SINGLE_HEAD = "0018_ai_provenance"


def _stamped(urls: DatabaseUrls) -> frozenset[str]:
    return current_revisions(urls.owner)


def _tables(urls: DatabaseUrls) -> set[str]:
    with psycopg.connect(libpq(urls.owner)) as conn:
        return {row[0] for row in conn.execute("SELECT tablename::text FROM pg_tables")}


def _indexes(urls: DatabaseUrls) -> set[str]:
    with psycopg.connect(libpq(urls.owner)) as conn:
        return {row[0] for row in conn.execute("SELECT indexname::text FROM pg_indexes")}


def _app_branch(folder: Path, name: str, revision: str, **module: str) -> MigrationBranch:
    """A one-revision app branch in `folder`, creating the table `<name>_things`."""
    folder.mkdir(parents=True, exist_ok=True)
    attributes = {
        "revision": revision,
        "down_revision": None,
        "branch_labels": (name,),
        "depends_on": RUNTIME_HEAD,
        **module,
    }
    lines = [f"{key} = {value!r}" for key, value in attributes.items()]
    (folder / f"{revision}.py").write_text(
        '"""A test app\'s table."""\n\nfrom alembic import op\n\n'
        + "\n".join(lines)
        + f'\n\n\ndef upgrade() -> None:\n    op.execute("CREATE TABLE {name}_things (id int)")\n'
    )
    return MigrationBranch(name, folder)


def test_a_fresh_database_migrates_to_every_head(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database(migrate=False)
    before, after = upgrade(urls, [QUOTES])
    assert before == frozenset()
    assert after == head_revisions([QUOTES]) == {RUNTIME_HEAD, QUOTES_HEAD}
    assert {"quotes", "quote_items", "memberships"} <= _tables(urls)
    assert upgrade(urls, [QUOTES]) == (after, after)  # a second run changes nothing


def test_an_apps_migrations_run_only_once_it_is_served(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database(migrate=False)
    assert upgrade(urls, [], installed=[QUOTES])[1] == {RUNTIME_HEAD}
    assert "quotes" not in _tables(urls)  # installed, not served: nothing of it created
    assert ExpectedSchema([QUOTES]).missing(_stamped(urls)) == {QUOTES_HEAD}
    assert ExpectedSchema().missing(_stamped(urls)) == frozenset()
    upgrade(urls, [QUOTES])
    assert _stamped(urls) == head_revisions([QUOTES])
    assert "quotes" in _tables(urls)
    # No longer served: its branch is kept as it is, and known (its revision is read).
    assert upgrade(urls, [], installed=[QUOTES])[1] == head_revisions([QUOTES])


def test_a_branch_rooted_on_the_runtimes_head_still_counts_the_runtime_as_migrated(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    """Alembic moves the runtime's row to a branch that depends on the runtime's head: the
    database holds the app's revision only, and readiness must still see the runtime there."""
    urls = make_database(migrate=False)
    extra = _app_branch(tmp_path / "extra", "extra", "extra_0001")
    _, after = upgrade(urls, [QUOTES, extra])
    assert after == {"extra_0001", QUOTES_HEAD}  # the runtime's row was taken over
    assert ExpectedSchema([QUOTES, extra]).missing(after) == frozenset()
    # Without the app's row: the quote app's says the runtime got to 0012 only.
    missing = ExpectedSchema([QUOTES, extra]).missing({QUOTES_HEAD})
    assert missing == {"extra_0001", RUNTIME_HEAD}


def _as_before_branches(urls: DatabaseUrls, single_head: str, *, with_ownership: bool) -> None:
    """A database as the single chain left it at `single_head`: the quote tables in it, one
    row in alembic_version, and the role check that listed the quote app's roles."""
    ensure_app_role(urls)
    config = _config(urls.owner, [QUOTES])
    command.upgrade(config, single_head)
    command.upgrade(config, "0013_quote_ownership" if with_ownership else "0002_quotes")
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute("DELETE FROM alembic_version")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (single_head,))
        conn.execute("ALTER TABLE memberships DROP CONSTRAINT ck_memberships_role")
        conn.execute(
            "ALTER TABLE memberships ADD CHECK (role IN ('buyer', 'seller', 'finance', 'admin'))"
        )


def test_a_database_of_the_single_chain_is_adopted_and_migrated(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    _as_before_branches(urls, OLD_SINGLE_HEAD, with_ownership=True)
    result = run("migrate", "--json", env=owner_env(tmp_path, urls))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["from"] == [OLD_SINGLE_HEAD]
    assert report["to"] == sorted(head_revisions([QUOTES]))  # nothing ran twice (it would fail)
    with psycopg.connect(libpq(urls.owner)) as conn:
        constraints = {
            row[0]
            for row in conn.execute(
                "SELECT conname::text FROM pg_constraint WHERE conrelid = 'memberships'::regclass"
            )
        }
    assert "memberships_role_check" not in constraints  # the list of one app's roles is gone
    assert "ck_memberships_role" in constraints


def test_a_database_of_the_single_chain_gets_what_the_chain_had_not_run_yet(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    """Stamped at 0012: the quote tables were there (0002 ran before), their ownership
    indexes were not (0013 came after): only 0002 is adopted, 0013 runs."""
    urls = make_database(migrate=False)
    _as_before_branches(urls, "0012_ai_hardening", with_ownership=False)
    assert "ix_quotes_buyer" not in _indexes(urls)
    _, after = upgrade(urls, [QUOTES])
    assert after == head_revisions([QUOTES])
    assert "ix_quotes_buyer" in _indexes(urls)


def test_a_database_of_the_single_chain_stopped_inside_an_apps_revisions_migrates(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    """Stamped at the quote app's own revision: its depends_on says where the runtime was."""
    urls = make_database(migrate=False)
    _as_before_branches(urls, "0012_ai_hardening", with_ownership=True)
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0013_quote_ownership'")
    assert upgrade(urls, [QUOTES])[1] == head_revisions([QUOTES])


def test_an_app_revision_outside_its_branch_is_refused(tmp_path: Path) -> None:
    unlabelled = _app_branch(tmp_path / "a", "first", "first_0001", branch_labels=None)
    with pytest.raises(MigrationError, match=r"app first: revision first_0001 is not in its"):
        head_revisions([unlabelled])
    rootless = _app_branch(tmp_path / "b", "second", "second_0001", depends_on=None)
    with pytest.raises(MigrationError, match="starts the branch without depends_on"):
        head_revisions([rootless])
    with pytest.raises(MigrationError, match="may not be called 'ramparts'"):
        head_revisions([MigrationBranch("ramparts", tmp_path / "a")])


def test_a_revision_of_an_app_no_longer_installed_stops_the_migration_with_one_clear_line(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    upgrade(urls, [QUOTES, _app_branch(tmp_path / "gone", "gone", "gone_0001")])
    result = run("migrate", env=owner_env(tmp_path, urls))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "gone_0001" in lines[0]
    assert "still installed" in lines[0]


def test_the_role_of_a_membership_is_checked_for_its_form_only(urls: DatabaseUrls) -> None:
    """Which roles exist is the apps' to say (provisioning checks it); the schema refuses
    what no role name looks like."""
    tenant, user = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'R', 'eu')",
            (tenant, f"r-{tenant.hex[:8]}"),
        )
        conn.execute(
            "INSERT INTO users (id, tenant_id, username, display_name) "
            "VALUES (%s, %s, 'r@example.test', 'R')",
            (user, tenant),
        )
        conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'approver_2')",
            (tenant, user),
        )
        for bad in ("Admin", "2nd", "a-b", "", "x" * 33):
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, %s)",
                    (tenant, user, bad),
                )
