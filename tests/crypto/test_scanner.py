"""The secret scanner: finds credentials, never prints them, and leaves ordinary code alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ramparts.crypto.scanner import find_configured_secrets, find_secrets
from ramparts.detectors import Kind
from tests.conftest import cli_env
from tests.test_cli import RAMPARTS, run

# Built at run time, so this file holds no secret-shaped literal for the scanner to find.
PLANTED = {
    Kind.API_KEY: "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    Kind.PRIVATE_KEY: "-----BEGIN EC " + "PRIVATE KEY-----",
    Kind.PASSWORD: 'db_password = "' + "Xk4" + "mP9qLw2z" + '"',
    Kind.HIGH_ENTROPY: 'seed = "' + "9fQ2xLm8VbT4nR7c" + "K1sW5yH3jD6gA0pZ" + "eU8iO2" + '"',
}


@pytest.mark.parametrize("kind", PLANTED)
def test_each_credential_kind_is_found(kind: Kind) -> None:
    [finding] = find_secrets(f"x = 1\n{PLANTED[kind]}\n")
    assert finding.kind is kind


@pytest.mark.parametrize(
    "line",
    [
        'TOKEN_ISSUED = "identity:token:issued"',
        'auth_method = "client_secret_post"',
        "password: str",
        "password = generate_password()",
        'password = "{password}"',
        '"sha256:' + "0" * 64 + '"',  # a checksum of zeros has no entropy
        'name = "ramparts-web-application"',
    ],
)
def test_ordinary_code_is_left_alone(line: str) -> None:
    assert find_secrets(line) == []


RANDOM = "Vq7-Lm2x" + "9Kp4Rt8Zs1"


@pytest.mark.parametrize(
    "line",
    [
        f"RAMPARTS_SECRET_KEY={RANDOM}",
        f"export STRIPE_API_KEY={RANDOM}",
        f"  password: {RANDOM}",
        f"  - POSTGRES_PASSWORD={RANDOM}  # for the demo",
        f"RAMPARTS_APP_DATABASE_URL=postgresql://ramparts_app:{RANDOM}@db/ramparts",
        f"  url: redis://:{RANDOM}@redis:6379/0",
    ],
)
def test_configuration_files_credentials_are_found(line: str) -> None:
    [finding] = find_configured_secrets(line)
    assert finding.kind is Kind.PASSWORD
    assert finding.value == RANDOM


@pytest.mark.parametrize(
    "line",
    [
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in the environment}",
        "  - RAMPARTS_SECRET_KEY=${RAMPARTS_SECRET_KEY}",
        "RAMPARTS_KMS_KEY_FILE=/etc/ramparts/kek.key",
        "      secretName: ramparts-secrets",
        "  - name: RAMPARTS_SECRET_KEY",
        "password=secrets.token_urlsafe(16)",
        'url = f"postgresql://ramparts_app:{password}@db/ramparts"',
        "RAMPARTS_APP_DATABASE_URL=postgresql://ramparts_app:<password>@db/ramparts",
    ],
)
def test_configuration_references_are_left_alone(line: str) -> None:
    assert find_configured_secrets(line) == []


def test_the_cli_scans_a_checkout_names_places_not_values(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "clean.py").write_text("print('hello')\n")
    (tmp_path / "settings.py").write_text(f"DEBUG = False\nSTRIPE = '{PLANTED[Kind.API_KEY]}'\n")
    (tmp_path / "fixture.py").write_text(
        f"FAKE = '{PLANTED[Kind.API_KEY]}'  # pragma: allowlist secret\n"
    )
    (tmp_path / "ignored.env").write_text(f"KEY={PLANTED[Kind.API_KEY]}\n")
    (tmp_path / ".gitignore").write_text("*.env\n")
    env = cli_env(tmp_path)
    found = subprocess.run(
        [RAMPARTS, "secrets", "scan", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert report["leaks"] == [{"path": "settings.py", "line": 2, "kind": "API_KEY"}]
    assert PLANTED[Kind.API_KEY] not in found.stdout + found.stderr
    clean = run("secrets", "scan", str(tmp_path / "clean.py"), env=env)
    assert clean.returncode == 0
    missing = run("secrets", "scan", str(tmp_path / "nope.py"), env=env)
    assert missing.returncode == 2
