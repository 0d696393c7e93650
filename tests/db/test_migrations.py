"""Migrations that must refuse rather than guess."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
from alembic import command

from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.db.migrate import _config, current_revision, ensure_app_role
from tests.test_cli import owner_env, run


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
    assert current_revision(urls.owner) == "0008_tenant_keys"  # nothing half-done
