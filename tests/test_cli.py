"""The `ramparts` command, run as a user runs it: a subprocess with environment variables."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ramparts.apps import migration_branches, selected_apps
from ramparts.db.engine import DatabaseUrls
from ramparts.db.migrate import head_revisions
from ramparts.payments.webhook_secrets import WebhookSecrets
from tests.certs import certificate, write_pem
from tests.conftest import cli_env, cli_kms, free_port, libpq
from tests.identity.helpers import bearer, sign_in_demo_buyer
from tests.test_config import STRONG_DB_PASSWORD, STRONG_KEY, VAULT_TOKEN

#: What `migrate` brings a database to: the runtime's head and each default app's.
HEAD = sorted(head_revisions(migration_branches(selected_apps(None))))
RAMPARTS = str(Path(sys.executable).with_name("ramparts"))


def owner_env(home: Path, urls: DatabaseUrls, **extra: str) -> dict[str, str]:
    return cli_env(home, RAMPARTS_DATABASE_URL=libpq(urls.owner), **extra)


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPARTS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Started:
    process: subprocess.Popen[str]
    seconds: float
    output: str = ""  # everything it printed, filled in once it has stopped


@contextmanager
def running(
    *args: str,
    env: dict[str, str],
    url: str,
    verify: ssl.SSLContext | bool = False,
    within: float = 30,
) -> Iterator[Started]:
    """Start a long-running command, wait until `url` answers, SIGTERM it on the way out.

    Its output goes to a file, never a pipe: a server logs a line per request, and a pipe
    nobody reads until the end would fill and stop the server mid-test."""
    began = time.monotonic()
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in `finally`)
    process = subprocess.Popen([RAMPARTS, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    started = Started(process, 0.0)

    def printed() -> str:
        log.seek(0)
        return log.read()

    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ramparts {args[0]} exited {process.returncode}:\n{printed()}")
            try:
                if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - began > within:
                pytest.fail(f"{url} did not answer within {within} s")
            time.sleep(0.1)
        started.seconds = time.monotonic() - began
        yield started
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            started.output = printed()
            log.close()


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run("--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    for command in ("serve", "migrate", "seed-demo", "demo"):
        assert command in result.stdout


def test_migrate_is_idempotent(tmp_path: Path, make_database: Callable[..., DatabaseUrls]) -> None:
    env = owner_env(tmp_path, make_database(migrate=False))
    first = run("migrate", "--json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report.pop("signing_key_created")  # the first signing key comes with the schema
    assert report == {"from": [], "to": HEAD, "changed": True}
    second = json.loads(run("migrate", "--json", env=env).stdout)
    assert second == {"from": HEAD, "to": HEAD, "changed": False, "signing_key_created": None}


def test_keys_rotate(tmp_path: Path, make_database: Callable[..., DatabaseUrls]) -> None:
    env = owner_env(tmp_path, make_database(migrate=False))
    first = json.loads(run("migrate", "--json", env=env).stdout)["signing_key_created"]
    rotated = run("keys", "rotate", "--json", env=env)
    assert rotated.returncode == 0, rotated.stderr
    report = json.loads(rotated.stdout)
    assert report["kid"] != first
    assert report["published"] == sorted([first, report["kid"]])
    assert report["retired"] == []


def test_tenant_keys_rotate_reencrypt_and_shred(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    env = owner_env(tmp_path, urls)
    assert run("seed-demo", env=env).returncode == 0

    def versions() -> list[int]:
        with psycopg.connect(libpq(urls.owner)) as conn:
            return sorted(
                row[0]
                for row in conn.execute(
                    "SELECT ramparts_sealed_version(sealed_secret) FROM totp_credentials "
                    "JOIN tenants ON tenants.id = tenant_id WHERE slug = 'acme'"
                )
            )

    assert versions() == [1] * 6  # one TOTP secret per demo user
    rotated = run("keys", "rotate", "--tenant", "acme", "--json", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {
        "tenant": "acme",
        "data_key_version": 2,
        "reencrypted": 6,
    }
    assert versions() == [2] * 6
    again = run("keys", "reencrypt", "--tenant", "acme", "--json", env=env)
    assert json.loads(again.stdout) == {"tenant": "acme", "reencrypted": 0}

    kms = run("keys", "rotate", "--tenant", "acme", "--kms", "--json", env=env)
    assert kms.returncode == 0, kms.stderr
    report = json.loads(kms.stdout)
    assert report["kms_key"].endswith(":v2")
    assert report["rewrapped"] == 2  # data keys v1 and v2
    assert run("keys", "rotate", "--kms", "--json", env=env).returncode == 0  # the system key

    refused = run("tenants", "delete", "acme", env=env)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    deleted = run("tenants", "delete", "acme", "--yes", "--json", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["data_keys_shredded"] == 2
    assert versions() == []
    missing = run("keys", "rotate", "--tenant", "acme", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "ramparts: error: no tenant 'acme'"
    # The other tenant, and logins' signing keys, are untouched.
    assert run("keys", "rotate", "--tenant", "globex", env=env).returncode == 0
    assert run("keys", "rotate", env=env).returncode == 0


def test_a_keystore_opened_with_the_wrong_passphrase_is_one_clear_error(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls, RAMPARTS_KMS_PASSPHRASE="correct horse battery staple")
    assert run("migrate", env=env).returncode == 0
    wrong = owner_env(tmp_path, urls, RAMPARTS_KMS_PASSPHRASE="wrong horse battery staple")
    result = run("keys", "rotate", "--kms", env=wrong)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ramparts: error: the KMS passphrase or key file does not open")
    assert "horse" not in result.stderr


def test_seed_demo_prints_fresh_credentials_and_stores_only_hashes(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    env = owner_env(tmp_path, urls)
    result = run("seed-demo", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {(t["slug"], t["region"]) for t in report["tenants"]} == {
        ("acme", "eu"),
        ("globex", "us"),
    }
    usernames = {u["username"] for u in report["users"]}
    for slug in ("acme", "globex"):
        for local in ("buyer", "buyer2", "seller", "finance", "finance2", "admin"):
            assert f"{local}@{slug}.test" in usernames
    passwords = [u["password"] for u in report["users"]]
    assert len(set(passwords)) == len(passwords) == 12
    assert all(len(p) >= 16 for p in passwords)
    assert set(report) == {"tenants", "users", "oidc_client", "webhook_secret"}
    assert report["oidc_client"] == {
        "client_id": "ramparts-web",
        "redirect_uri": "http://127.0.0.1:8000/app/callback",
    }
    secrets_ = [u["totp_secret"] for u in report["users"]]
    assert len(set(secrets_)) == 12
    assert all(len(base64.b32decode(s)) == 20 for s in secrets_)  # 160-bit RFC 4226 secrets

    # The sandbox PSP's webhook secret: the one the KMS holds, kept across re-seeds.
    assert report["webhook_secret"].startswith("whsec_")
    assert WebhookSecrets(cli_kms(tmp_path)).active() == [report["webhook_secret"].encode()]

    again = json.loads(run("seed-demo", "--json", env=env).stdout)
    assert again["tenants"] == report["tenants"]
    assert again["webhook_secret"] == report["webhook_secret"]
    assert not set(passwords) & {u["password"] for u in again["users"]}

    with psycopg.connect(libpq(urls.owner)) as conn:
        hashes_ = [row[0] for row in conn.execute("SELECT password_hash FROM users")]
        assert len(hashes_) == 12
        assert all(h.startswith("$argon2id$") for h in hashes_)
        dump = " ".join(
            str(row)
            for table in ("users", "tenants", "memberships", "quotes")
            for row in conn.execute(f"SELECT * FROM {table}")
        )
        assert not any(p in dump for p in passwords + [u["password"] for u in again["users"]])
        sealed = b"".join(
            row[0] for row in conn.execute("SELECT sealed_secret FROM totp_credentials")
        )
        for secret in secrets_ + [u["totp_secret"] for u in again["users"]]:
            assert secret.encode() not in sealed
            assert base64.b32decode(secret) not in sealed
        quotes = conn.execute("SELECT count(*) FROM quotes").fetchone()
        assert quotes == (8,)  # sample quotes are not duplicated by the second run
        # In each tenant the seller has open requests to answer, and the buyer a proposal.
        stages = conn.execute(
            "SELECT t.slug, q.status, count(*), count(q.proposal) "
            "FROM quotes q JOIN tenants t ON t.id = q.tenant_id "
            "WHERE q.status IN ('draft', 'submitted') GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert stages == [
            (slug, status, count, proposals)
            for slug in ("acme", "globex")
            for status, count, proposals in (("draft", 2, 0), ("submitted", 1, 1))
        ]
        # Each tenant's accepted quote, answered by its seller: a deposit Finance can charge.
        accepted = conn.execute(
            "SELECT t.slug, b.username, s.username, sum(i.quantity * i.unit_price_minor) "
            "FROM quotes q JOIN tenants t ON t.id = q.tenant_id "
            "JOIN users b ON b.id = q.buyer_id JOIN users s ON s.id = q.seller_id "
            "JOIN quote_items i ON i.quote_id = q.id "
            "WHERE q.status = 'accepted' GROUP BY t.slug, b.username, s.username ORDER BY 1"
        ).fetchall()
        assert accepted == [
            ("acme", "buyer@acme.test", "seller@acme.test", 801_000),
            ("globex", "buyer@globex.test", "seller@globex.test", 801_000),
        ]


def test_seed_demo_prints_every_credential_whole_and_keeps_them_in_a_private_file(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    """A narrow terminal or a log must still show each password and TOTP secret in full, and
    the same credentials wait in RAMPARTS_HOME for whoever missed them, readable by the owner
    only."""
    env = owner_env(tmp_path, make_database(), COLUMNS="40")
    saved = tmp_path / "demo-credentials.json"
    saved.write_text("{}")
    saved.chmod(0o644)  # an older file with a loose mode is tightened, not trusted
    result = run("seed-demo", env=env)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    report = json.loads(saved.read_text())
    assert saved.stat().st_mode & 0o777 == 0o600
    lines = result.stdout.splitlines()
    assert any(line.strip() == str(saved) for line in lines)  # the path whole, never wrapped
    for user in report["users"]:
        assert any(user["username"] in line for line in lines)
        assert any(line.split()[-1:] == [user["password"]] for line in lines)
        assert any(line.split()[-1:] == [user["totp_secret"]] for line in lines)

    saved.unlink()
    decoy = tmp_path / "elsewhere.json"
    saved.symlink_to(decoy)  # a planted link must not carry the passwords away
    refused = run("seed-demo", env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith("ramparts: error: cannot write the demo credentials")
    assert len(refused.stderr.splitlines()) == 1
    assert not decoy.exists()


@pytest.mark.parametrize("command", ["seed-demo", "demo"])
def test_demo_commands_refuse_other_profiles(tmp_path: Path, command: str) -> None:
    result = run(command, env=cli_env(tmp_path, RAMPARTS_PROFILE="stage"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ramparts: error: {command} runs only under the dev profile (RAMPARTS_PROFILE=stage)"
    )


def test_malformed_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run("migrate", env=cli_env(tmp_path, RAMPARTS_PROFILE="production"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ramparts: error: RAMPARTS_PROFILE:")


def prod_env(home: Path, urls: DatabaseUrls) -> dict[str, str]:
    """A clean prod configuration: the runtime role's URL only, never the owner's."""
    app_url = libpq(urls.app.set(password=STRONG_DB_PASSWORD))
    return cli_env(
        home,
        RAMPARTS_PROFILE="prod",
        RAMPARTS_APP_DATABASE_URL=app_url,
        RAMPARTS_SECRET_KEY=STRONG_KEY,
        RAMPARTS_KMS_BACKEND="vault",
        RAMPARTS_VAULT_URL="https://vault.example.com:8200",
        RAMPARTS_VAULT_TOKEN=VAULT_TOKEN,
        RAMPARTS_PSP="stripe",
        RAMPARTS_PUBLIC_URL="https://ramparts.example.com",
        # Connected lazily, at the assistant's first request.
        RAMPARTS_REDIS_URL=f"redis://:{STRONG_DB_PASSWORD}@127.0.0.1:6379/0",
    )


def test_prod_guard_starts_a_clean_configuration_and_refuses_demo_data(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    env = prod_env(tmp_path, urls)
    port = free_port()
    with running("serve", "--port", str(port), env=env, url=f"http://127.0.0.1:{port}/readyz"):
        pass
    seeded = run("seed-demo", env=owner_env(tmp_path, urls))
    assert seeded.returncode == 0, seeded.stderr
    refused = run("serve", "--port", str(port), env=env)
    assert refused.returncode == 3
    assert refused.stderr.strip() == (
        "ramparts: error: refusing to start under the prod profile: "
        "demo tenants or users present in the database"
    )


def test_prod_guard_lists_every_violation_at_once(tmp_path: Path) -> None:
    env = cli_env(
        tmp_path, RAMPARTS_PROFILE="prod", RAMPARTS_DEBUG="true", RAMPARTS_CORS_ORIGINS="*"
    )
    result = run("serve", env=env)
    assert result.returncode == 3
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    for expected in (
        "embedded database",
        "RAMPARTS_SECRET_KEY is not set",
        "debug is on",
        "local KMS keystore",
        "sandbox PSP",
        "CORS wildcard",
    ):
        assert expected in message
    assert not (tmp_path / "pgdata").exists()  # refused before starting anything


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    return write_pem(directory, "server", certificate("localhost", key, dns="localhost"), key)


def test_tls_accepts_only_tls13(tmp_path: Path, urls: DatabaseUrls) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    base = f"https://localhost:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    with running(
        "serve",
        "--port",
        str(port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        env=owner_env(tmp_path, urls),
        url=f"{base}/healthz",
        verify=trust,
    ):
        tls13 = httpx.get(f"{base}/healthz", verify=trust)
        assert tls13.status_code == 200
        assert tls13.headers["strict-transport-security"].startswith("max-age=")
        legacy = ssl.create_default_context(cafile=str(cert))
        legacy.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", verify=legacy)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    result = run("serve", "--tls-cert", str(tmp_path / "c.pem"), env=cli_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == "ramparts: error: --tls-cert and --tls-key go together"


@pytest.mark.parametrize(
    ("workers", "redis", "message"),
    [
        ("0", None, "--workers must be between 1 and 64, not 0"),
        ("65", "redis://127.0.0.1:6379/0", "--workers must be between 1 and 64, not 65"),
        (
            "2",
            None,
            "--workers 2 needs RAMPARTS_REDIS_URL: without it the assistant's rate limits and "
            "budgets are kept per process and would multiply by the workers",
        ),
    ],
)
def test_serve_refuses_worker_counts_it_cannot_run(
    tmp_path: Path, workers: str, redis: str | None, message: str
) -> None:
    env = cli_env(tmp_path, **({"RAMPARTS_REDIS_URL": redis} if redis else {}))
    result = run("serve", "--workers", workers, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"ramparts: error: {message}"
    assert not (tmp_path / "pgdata").exists()  # refused before starting anything


@pytest.mark.embedded
def test_demo_runs_on_the_embedded_database(tmp_path: Path) -> None:
    """The README's promise: one command, nothing else running, /healthz within 15 s, and a
    demo user signs in with password and TOTP through the first-party client."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path)  # no RAMPARTS_DATABASE_URL: the embedded default
    with running("demo", "--port", str(port), env=env, url=f"{base}/healthz", within=15) as demo:
        ready = httpx.get(f"{base}/readyz")
        assert ready.json() == {"status": "ready", "schema": HEAD}
        assert (tmp_path / "pgdata" / "PG_VERSION").exists()
        # Fresh credentials (seed-demo joins the running embedded server).
        seeded = run("seed-demo", "--json", env={**env, "RAMPARTS_PUBLIC_URL": base})
        assert seeded.returncode == 0, seeded.stderr
        report = json.loads(seeded.stdout)
        assert report["oidc_client"]["redirect_uri"] == f"{base}/app/callback"
        with httpx.Client(base_url=base) as browser:
            tokens = sign_in_demo_buyer(browser, report).json()
            me = browser.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).json()
        assert me["roles"] == ["buyer"]
        assert me["tenant"] == report["tenants"][0]["id"]
    assert demo.process.returncode == 128 + signal.SIGTERM  # stopped by our SIGTERM
    assert "buyer@acme.test" in demo.output
    # The job worker ran beside the server and stopped with it.
    assert "worker_started" in demo.output
    assert "worker_stopped" in demo.output
    deadline = time.monotonic() + 10
    while (tmp_path / "pgdata" / "postmaster.pid").exists():  # the server stops with us
        assert time.monotonic() < deadline, "embedded PostgreSQL kept running"
        time.sleep(0.2)


def test_service_client_lifecycle(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    assert run("seed-demo", env=env).returncode == 0
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "EC",
                "crv": "P-256",
                "kid": "k1",
                "x": base64.urlsafe_b64encode(public.x.to_bytes(32, "big")).rstrip(b"=").decode(),
                "y": base64.urlsafe_b64encode(public.y.to_bytes(32, "big")).rstrip(b"=").decode(),
            }
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    created = run(
        "clients",
        "create",
        "--tenant",
        "acme",
        "--name",
        "ledger",
        "--resource",
        "https://ledger.example/",
        "--jwks-file",
        str(tmp_path / "jwks.json"),
        "--json",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["client_id"]
    assert client_id.startswith("svc.")
    both = run("clients", "create", "--tenant", "acme", "--name", "x", "--resource", "r", env=env)
    assert both.returncode == 2
    assert "exactly one of --jwks-file and --cert-file" in both.stderr
    nowhere = run("clients", "revoke", "--tenant", "nope", client_id, env=env)
    assert nowhere.returncode == 2
    assert run("clients", "revoke", "--tenant", "acme", client_id, env=env).returncode == 0
    again = run("clients", "revoke", "--tenant", "acme", client_id, env=env)
    assert again.returncode == 2
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "SELECT auth_method, resources, revoked_at IS NOT NULL FROM "
            "service_clients WHERE client_id = %s",
            (client_id,),
        ).fetchone()
    assert row == ("private_key_jwt", ["https://ledger.example/"], True)


def test_identity_provider_setup(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    assert run("seed-demo", env=env).returncode == 0
    plain = run(
        "idp",
        "set",
        "--tenant",
        "acme",
        "--issuer",
        "http://idp.example",
        "--client-id",
        "ramparts",
        env=env,
    )
    assert plain.returncode == 2
    assert "https" in plain.stderr
    configured = run(
        "idp",
        "set",
        "--tenant",
        "acme",
        "--issuer",
        "https://idp.example",
        "--client-id",
        "ramparts",
        "--mfa-acr",
        "phr",
        env=env,
    )
    assert configured.returncode == 0, configured.stderr
    unknown = run(
        "idp",
        "link",
        "--tenant",
        "acme",
        "--username",
        "ghost@acme.test",
        "--subject",
        "42",
        env=env,
    )
    assert unknown.returncode == 2
    linked = run(
        "idp",
        "link",
        "--tenant",
        "acme",
        "--username",
        "buyer@acme.test",
        "--subject",
        "42",
        env=env,
    )
    assert linked.returncode == 0, linked.stderr
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "SELECT f.issuer, f.subject, u.username FROM federated_identities f "
            "JOIN users u ON u.id = f.user_id"
        ).fetchone()
        idp = conn.execute("SELECT mfa_acr FROM tenant_identity_providers").fetchone()
    assert row == ("https://idp.example", "42", "buyer@acme.test")
    assert idp == (["phr"],)
