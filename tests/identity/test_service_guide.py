"""docs/service-clients.md's worked example, run as written: its shell blocks through bash with
the real `ramparts` command, its Python files with this interpreter, against a live server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from joserfc import jwk

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from tests.conftest import cli_env, libpq
from tests.identity.helpers import OVERLAP, provisioning_for

GUIDE = Path(__file__).parents[2] / "docs" / "service-clients.md"
BIN = Path(sys.executable).parent


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)


def block(language: str, containing: str) -> str:
    [found] = [text for text in blocks(language) if containing in text]
    return found


@pytest.fixture
def tenant(urls: DatabaseUrls, kms: Kms) -> str:
    async def run() -> str:
        owner = Database(urls.owner, pool_size=1)
        try:
            provisioning = provisioning_for(owner, kms)
            slug = f"g-{secrets.token_hex(5)}"
            await provisioning.ensure_tenant(slug=slug, name=slug, region="eu")
            await provisioning.ensure_signing_key(overlap=OVERLAP)
            return slug
        finally:
            await owner.dispose()

    return asyncio.run(run())


def test_the_worked_example_works(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, tenant: str, tmp_path: Path
) -> None:
    server = serve_app()
    work = tmp_path / "service"
    work.mkdir()
    env = cli_env(tmp_path / "home", RAMPARTS_DATABASE_URL=libpq(urls.owner))
    # The guide's `export` line, with this run's server and tenant.
    env.update(ISSUER=str(server.base_url).rstrip("/"), TENANT=tenant)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    assert "export ISSUER=http://127.0.0.1:8000 TENANT=acme" in block("sh", "export ISSUER")

    def bash(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def python(name: str) -> subprocess.CompletedProcess[str]:
        (work / name).write_text(block("python", f"# {name}"))
        return subprocess.run(
            [sys.executable, name],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = python("make_key.py")
    assert made.returncode == 0, made.stderr
    assert (work / "service-key.json").stat().st_mode & 0o077 == 0  # the private key: 0600
    public = jwk.KeySet.import_key_set(json.loads((work / "jwks.json").read_text())).keys
    assert [key.get("crv") for key in public] == ["P-256"]

    registered = bash(block("sh", "clients create") + 'echo "$CLIENT_ID"')
    assert registered.returncode == 0, registered.stderr
    client_id = registered.stdout.strip().splitlines()[-1]
    assert client_id.startswith("svc.")
    env["CLIENT_ID"] = client_id

    called = python("call_api.py")
    assert called.returncode == 0, called.stderr
    assert called.stdout.startswith("200 quotes: ")

    revoked = bash(block("sh", "clients revoke"))
    assert revoked.returncode == 0, revoked.stderr
    refused = python("call_api.py")
    assert refused.returncode != 0
    assert "invalid_client" in refused.stderr


def test_registration_refuses_keys_that_cannot_sign_es256(
    tmp_path: Path, urls: DatabaseUrls, tenant: str
) -> None:
    """The guide says only ES256 keys are accepted: the CLI refuses others in one line."""
    env = cli_env(tmp_path / "home", RAMPARTS_DATABASE_URL=libpq(urls.owner))
    for key in (
        jwk.RSAKey.generate_key(2048, parameters={"kid": "r"}),
        jwk.ECKey.generate_key("P-384", parameters={"kid": "p384"}),
        jwk.OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}),
    ):
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
        answer = subprocess.run(
            [
                str(BIN / "ramparts"),
                "clients",
                "create",
                "--tenant",
                tenant,
                "--name",
                "x",
                "--resource",
                "https://api.example/",
                "--jwks-file",
                str(jwks),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert answer.returncode == 2, answer.stderr
        assert "only ES256 keys" in answer.stderr
        assert len(answer.stderr.strip().splitlines()) == 1
