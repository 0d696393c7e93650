"""The reviewed settings files of `deploy/` and the prod profile's refusals (control PLT-1).

`deploy/{dev,stage,prod}.env` hold every non-secret setting of an environment; secrets come
from the environment (a secret store). Here the real `ramparts serve` starts under the prod
profile from `deploy/prod.env` plus the fewest real secrets that make it valid, once per
violation the production guard knows, and must refuse with exactly that violation named.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dotenv import dotenv_values
from pydantic import SecretStr

import ramparts.config
from ramparts.config import Settings, load_settings, production_violations
from ramparts.crypto.scanner import scan_paths
from ramparts.db.engine import DatabaseUrls
from tests.conftest import cli_env, libpq
from tests.test_config import STRONG_DB_PASSWORD, STRONG_KEY, VAULT_TOKEN

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROFILES = ("dev", "stage", "prod")
RAMPARTS = str(Path(sys.executable).with_name("ramparts"))
KNOWN = {f"RAMPARTS_{name.upper()}" for name in Settings.model_fields}
SECRET_SETTINGS = {
    f"RAMPARTS_{name.upper()}"
    for name, info in Settings.model_fields.items()
    if SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
}
REFUSED = "ramparts: error: refusing to start under the prod profile: "

#: The fewest secrets that make `deploy/prod.env` a valid production configuration; they
#: would come from the secret store. The database URL is set per test (its own database).
STRONG_REDIS = f"redis://:{STRONG_DB_PASSWORD}@127.0.0.1:6379/0"
PROD_SECRETS = {
    "RAMPARTS_SECRET_KEY": STRONG_KEY,
    "RAMPARTS_VAULT_TOKEN": VAULT_TOKEN,
    "RAMPARTS_REDIS_URL": STRONG_REDIS,
}

#: One configuration per violation: the change to the clean production environment (None
#: removes a variable) and the violation `serve` must name, alone. The demo-data violation is
#: reached through the database instead (see `test_serve_refuses_each_violation_by_name`).
CASES: dict[str, tuple[dict[str, str | None], str]] = {
    "embedded": (
        {"RAMPARTS_APP_DATABASE_URL": None},
        "embedded database (set RAMPARTS_APP_DATABASE_URL to a PostgreSQL server)",
    ),
    "owner-url": (
        {"RAMPARTS_DATABASE_URL": f"postgresql://postgres:{STRONG_DB_PASSWORD}@db/ramparts"},
        "RAMPARTS_DATABASE_URL (the owner's credentials) is set for the server; "
        "migrate separately and serve with RAMPARTS_APP_DATABASE_URL only",
    ),
    "db-no-password": (
        {"RAMPARTS_APP_DATABASE_URL": "postgresql://ramparts_app@db/ramparts?sslmode=require"},
        "RAMPARTS_APP_DATABASE_URL has no password or client certificate (sslcert)",
    ),
    "db-weak-password": (
        {"RAMPARTS_APP_DATABASE_URL": "postgresql://ramparts_app:postgres@db/ramparts"},
        "RAMPARTS_APP_DATABASE_URL has a default or weak password",
    ),
    "secret-key-unset": ({"RAMPARTS_SECRET_KEY": None}, "RAMPARTS_SECRET_KEY is not set"),
    "secret-key-default": (
        {"RAMPARTS_SECRET_KEY": "changeme"},
        "RAMPARTS_SECRET_KEY is a default or weak secret (need 32+ random characters)",
    ),
    "no-redis": (
        {"RAMPARTS_REDIS_URL": None},
        "RAMPARTS_REDIS_URL is not set (rate limits and AI budgets would be per process, "
        "granted again by every API replica)",
    ),
    "redis-weak-password": (
        {"RAMPARTS_REDIS_URL": "redis://:redis@127.0.0.1:6379/0"},
        "RAMPARTS_REDIS_URL has no password or a weak one",
    ),
    "debug": ({"RAMPARTS_DEBUG": "true"}, "debug is on (RAMPARTS_DEBUG)"),
    "scripted-model": (
        {"RAMPARTS_MODEL": "scripted:/srv/ramparts/attack.json"},
        "RAMPARTS_MODEL is a replayed model (scripted:<file>, for drills)",
    ),
    "shared-model-key": (
        {"RAMPARTS_MODEL_KEYS": "shared"},
        "RAMPARTS_MODEL_KEYS=shared (tenants would share one model key)",
    ),
    "local-kms": (
        {"RAMPARTS_KMS_BACKEND": "local", "RAMPARTS_VAULT_TOKEN": None},
        "local KMS keystore (set RAMPARTS_KMS_BACKEND=vault)",
    ),
    "vault-http": (
        {"RAMPARTS_VAULT_URL": "http://vault.example.internal:8200"},
        "RAMPARTS_VAULT_URL is not https",
    ),
    "sandbox-psp": ({"RAMPARTS_PSP": "sandbox"}, "sandbox PSP (set RAMPARTS_PSP=stripe)"),
    "psp-test-mode": (
        {"RAMPARTS_PSP_PUBLISHABLE_KEY": "pk_test_51Hx0Ramparts"},  # pragma: allowlist secret
        "RAMPARTS_PSP_PUBLISHABLE_KEY is a test-mode key (pk_test_)",
    ),
    "psp-http": (
        {"RAMPARTS_PSP_API_BASE": "http://127.0.0.1:12111"},
        "RAMPARTS_PSP_API_BASE is not https",
    ),
    "alerts-http": (
        {"RAMPARTS_ALERT_WEBHOOK_URL": "http://alerts.example.com/ramparts"},
        "RAMPARTS_ALERT_WEBHOOK_URL is not https",
    ),
    "cors-wildcard": (
        {"RAMPARTS_CORS_ORIGINS": "https://app.example.com,*"},
        "CORS wildcard origin '*' (list the allowed origins)",
    ),
    "cors-http": (
        {"RAMPARTS_CORS_ORIGINS": "http://app.example.com"},
        "CORS origin over plain http: http://app.example.com",
    ),
    "public-url-http": (
        {"RAMPARTS_PUBLIC_URL": "http://ramparts.example.com"},
        "RAMPARTS_PUBLIC_URL is not https",
    ),
    # /metrics for the scraper (deploy/prometheus.yml presents the token as a bearer).
    "metrics-token-weak": (
        {"RAMPARTS_METRICS_TOKEN": "changeme"},
        "RAMPARTS_METRICS_TOKEN is a default or weak secret (need 32+ random characters)",
    ),
    "metrics-everyone": (
        {"RAMPARTS_METRICS_NETWORKS": "10.0.0.0/8,0.0.0.0/0"},
        "RAMPARTS_METRICS_NETWORKS opens /metrics to every address: 0.0.0.0/0",
    ),
    "hsts-short": (
        {"RAMPARTS_HSTS_MAX_AGE": "86400"},
        "RAMPARTS_HSTS_MAX_AGE below one year (31536000 s)",
    ),
}
DEMO_DATA = "demo tenants or users present in the database"


def settings_file(profile: str) -> dict[str, str]:
    values = dotenv_values(DEPLOY / f"{profile}.env")
    assert all(value is not None for value in values.values())
    return {name: value or "" for name, value in values.items()}


def prod_environment(home: Path, app_url: str) -> dict[str, str]:
    """`deploy/prod.env` plus its secrets, for the CLI; the data directory is the test's."""
    env = cli_env(home) | settings_file("prod") | PROD_SECRETS
    return env | {"RAMPARTS_HOME": str(home), "RAMPARTS_APP_DATABASE_URL": app_url}


def apply(env: dict[str, str], change: dict[str, str | None]) -> dict[str, str]:
    changed = env | {name: value for name, value in change.items() if value is not None}
    return {name: value for name, value in changed.items() if change.get(name, "") is not None}


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("RAMPARTS_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("RAMPARTS_"):
            monkeypatch.setenv(name, value)
    return load_settings()


# --- the files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_settings_files_hold_known_settings_and_no_secret(profile: str) -> None:
    values = settings_file(profile)
    assert values["RAMPARTS_PROFILE"] == profile
    assert set(values) <= KNOWN, f"unknown settings: {sorted(set(values) - KNOWN)}"
    assert not SECRET_SETTINGS & set(values), "secrets come from the environment, not the file"
    # Nothing that looks like a credential either, by the scanner `ramparts secrets scan` runs.
    assert list(scan_paths([DEPLOY / f"{profile}.env"], ROOT)) == []


def test_a_secret_in_a_settings_file_is_caught(tmp_path: Path) -> None:
    """The checks above can fail: literal secrets are caught by both."""
    planted = tmp_path / "prod.env"
    planted.write_text(
        (DEPLOY / "prod.env").read_text()
        + f"RAMPARTS_SECRET_KEY={STRONG_KEY}\n"
        + f"RAMPARTS_APP_DATABASE_URL=postgresql://ramparts_app:{STRONG_DB_PASSWORD}@db/r\n"
    )
    assert SECRET_SETTINGS & set(dotenv_values(planted)) == {
        "RAMPARTS_SECRET_KEY",
        "RAMPARTS_APP_DATABASE_URL",
    }
    lines = len((DEPLOY / "prod.env").read_text().splitlines())
    assert [(leak.line, leak.kind) for leak in scan_paths([planted], tmp_path)] == [
        (lines + 1, "PASSWORD"),
        (lines + 2, "PASSWORD"),
    ]


@pytest.mark.parametrize("profile", ["dev", "stage"])
def test_dev_and_stage_pass_their_profiles_rules(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stage logs in to Vault like prod: its token comes from the environment.
    secrets = {"RAMPARTS_VAULT_TOKEN": VAULT_TOKEN} if profile == "stage" else {}
    settings = settings_of(settings_file(profile) | secrets, monkeypatch)
    assert settings.profile.value == profile
    assert production_violations(settings, demo_data_present=False) == []


def test_stage_is_production_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judged by the prod rules with its secrets, stage breaks none of them: a release
    rehearsed on stage meets no refusal in prod."""
    env = settings_file("stage") | PROD_SECRETS | {"RAMPARTS_PROFILE": "prod"}
    env["RAMPARTS_APP_DATABASE_URL"] = f"postgresql://ramparts_app:{STRONG_DB_PASSWORD}@db/r"
    settings = settings_of(env, monkeypatch)
    assert production_violations(settings, demo_data_present=False) == []


def test_prod_file_with_its_secrets_is_clean_and_without_them_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app_url = f"postgresql://ramparts_app:{STRONG_DB_PASSWORD}@db/ramparts"
    settings = settings_of(prod_environment(tmp_path, app_url), monkeypatch)
    assert production_violations(settings, demo_data_present=False) == []
    # The file alone lacks exactly its secrets: it is not a working configuration by itself.
    alone = settings_of(settings_file("prod") | {"RAMPARTS_VAULT_TOKEN": VAULT_TOKEN}, monkeypatch)
    assert production_violations(alone, demo_data_present=False) == [
        "embedded database (set RAMPARTS_APP_DATABASE_URL to a PostgreSQL server)",
        "RAMPARTS_SECRET_KEY is not set",
        "RAMPARTS_REDIS_URL is not set (rate limits and AI budgets would be per process, "
        "granted again by every API replica)",
    ]


# --- `ramparts serve` under prod, once per violation --------------------------------------------


CONFIG_SOURCE = Path(ramparts.config.__file__).read_text()


def violation_sites(source: str) -> dict[str, int]:
    """The leading literal text of every violation `production_violations` can report, read
    from the source of `ramparts/config.py`: each `violations.append(...)` and each returned
    list in a function named `*_violations`, with its line."""
    tree = ast.parse(source)
    sites: dict[str, int] = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or not function.name.endswith("violations"):
            continue
        for node in ast.walk(function):
            messages: list[ast.expr] = []
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "append"
            ):
                messages = node.args
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.List):
                messages = node.value.elts
            for message in messages:
                sites[_leading_text(message)] = message.lineno
    return sites


def _leading_text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if not isinstance(part, ast.Constant):
                break
            text += str(part.value)
        if text:
            return text
    raise AssertionError(f"line {node.lineno}: a violation must start with literal text")


def uncovered(sites: dict[str, int]) -> dict[str, int]:
    """The violations no case walks, with their lines."""
    expected = [message for _, message in CASES.values()] + [DEMO_DATA]
    covered = {max((s for s in sites if message.startswith(s)), key=len) for message in expected}
    return {site: line for site, line in sites.items() if site not in covered}


def test_every_violation_the_guard_knows_has_a_case() -> None:
    sites = violation_sites(CONFIG_SOURCE)
    assert uncovered(sites) == {}, "config.py reports violations no case here walks"
    assert len(sites) == len(CASES) + 1, "one case per violation"


def test_a_new_violation_without_a_case_is_noticed() -> None:
    planted = CONFIG_SOURCE.replace(
        "    if settings.debug:\n",
        "    if settings.model != 'offline':\n"
        "        violations.append(f'remote model {settings.model} without review')\n"
        "    if settings.debug:\n",
    )
    assert planted != CONFIG_SOURCE
    [(site, _)] = uncovered(violation_sites(planted)).items()
    assert site == "remote model "


def forked_serve(envs: list[dict[str, str]]) -> list[dict[str, Any]]:
    """`ramparts serve` once per environment, each in its own process (`tests.forked_cli`)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.forked_cli"],
        input=json.dumps([{"args": ["serve", "--port", "9"], "env": env} for env in envs]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def test_serve_refuses_each_violation_by_name(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    clean = prod_environment(tmp_path, libpq(urls.app.set(password=STRONG_DB_PASSWORD)))
    # Demo data: a tenant with a well-known demo slug, as `seed-demo` would leave it.
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner, owner.transaction():
        tenant = uuid.uuid4()
        owner.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
        owner.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, 'acme', 'Acme', 'eu')",
            (tenant,),
        )
    names = [*CASES, "demo-data"]
    envs = [apply(clean, change) for change, _ in CASES.values()] + [clean]
    # One case also through the console script, beside the forked runs: they must agree.
    change, message = CASES["debug"]
    console_script = subprocess.Popen(
        [RAMPARTS, "serve", "--port", "9"],
        env=apply(clean, change),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = forked_serve(envs)
    _, stderr = console_script.communicate(timeout=120)
    assert (console_script.returncode, stderr) == (3, f"{REFUSED}{message}\n")
    expected = [message for _, message in CASES.values()] + [DEMO_DATA]
    for name, result, message in zip(names, results, expected, strict=True):
        assert (result["code"], result["stderr"]) == (3, f"{REFUSED}{message}\n"), name
    assert not (tmp_path / "pgdata").exists()  # refused before starting anything
