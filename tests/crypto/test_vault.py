"""The Vault KMS against a real OpenBao server: the deployed least-privilege policy, logins
(token, AppRole, revoked and expired tokens), refusals, TLS, and the CLI's key rotation and
crypto-shredding end to end (the contract every KMS passes is in test_kms.py)."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from hvac import exceptions as vault_errors
from pydantic import SecretStr

from ramparts.ai.model_keys import SHARED_KEY_NAME
from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import Kms, KmsError, tenant_key
from ramparts.crypto.vault import VaultDeniedError, VaultKms, approle_login, vault_client
from ramparts.db.engine import DatabaseUrls
from tests.certs import certificate, write_pem
from tests.conftest import free_port, libpq
from tests.crypto.bao import POLICY_FILE, ROLE, Bao
from tests.test_cli import owner_env, prod_env, run, running

DATA_KEY = b"\x2a" * 32
STANZA = re.compile(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}')


def exercise(kms: Kms) -> None:
    """Everything the runtime asks of its KMS, once: a new key, wrap, unwrap, rotate, read the
    version, destroy; a new secret, an overwrite, a read."""
    key = tenant_key(uuid.uuid4())
    wrapped = kms.wrap(key, DATA_KEY, context="c")
    assert kms.unwrap(wrapped, context="c") == DATA_KEY
    assert kms.rotate(key) == f"{key}:v2" == kms.current(key)
    assert kms.destroy(key) is True
    name = f"psp/key-{secrets.token_hex(4)}"
    assert kms.write_secret(name, SecretStr("one"), create_only=True) is True
    assert kms.write_secret(name, SecretStr("two")) is True
    assert kms.read_secret(name) == SecretStr("two")


def approle_kms(bao: Bao, role: str, policy: str) -> VaultKms:
    """A KMS logged in through a fresh AppRole `role` that holds only `policy`."""
    admin = bao.admin()
    admin.sys.create_or_update_policy(name=role, policy=policy)
    admin.auth.approle.create_or_update_approle(role_name=role, token_policies=[role])
    role_id = admin.auth.approle.read_role_id(role_name=role)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role_name=role)["data"]["secret_id"]
    return VaultKms(vault_client(bao.url, role_id=role_id, secret_id=SecretStr(secret_id)))


def policy_token(bao: Bao, **options: str) -> SecretStr:
    """A token holding only the deployed policy (the token login, instead of AppRole)."""
    answer = bao.admin().auth.token.create(policies=[ROLE], no_default_policy=True, **options)
    return SecretStr(answer["auth"]["client_token"])


# --- the deployed policy -----------------------------------------------------------------


def test_the_backend_runs_on_exactly_the_deployed_policy(bao: Bao) -> None:
    admin = bao.admin()
    assert admin.sys.read_policy(name=ROLE)["data"]["rules"] == POLICY_FILE.read_text()
    role = admin.auth.approle.read_role(role_name=ROLE)["data"]
    assert role["token_policies"] == [ROLE]
    kms = bao.kms()
    exercise(kms)
    exercise(open_kms(bao.settings(token=policy_token(bao))))


def test_every_grant_of_the_deployed_policy_is_needed(bao: Bao) -> None:
    """Least privilege, both ways: without any one capability of the policy file, the runtime's
    own work is refused, so the file grants nothing it does not use."""
    policy = POLICY_FILE.read_text()
    stanzas = list(STANZA.finditer(policy))
    grants = [
        (stanza, capability.strip().strip('"'))
        for stanza in stanzas
        for capability in stanza[2].split(",")
        if capability.strip() != '"deny"'  # a denial grants nothing (tested on its own)
    ]
    assert len(grants) == 8, policy  # the parse saw every grant the file makes
    for number, (stanza, capability) in enumerate(grants):
        kept = [f'"{c}"' for c in stanza[2].replace('"', "").replace(" ", "").split(",")]
        kept.remove(f'"{capability}"')
        narrowed = (
            policy[: stanza.start()]
            + f'path "{stanza[1]}" {{ capabilities = [{", ".join(kept)}] }}'
            + policy[stanza.end() :]
        )
        kms = approle_kms(bao, f"narrowed-{number}", narrowed)
        with pytest.raises(VaultDeniedError, match=r"\(permission denied\)$"):
            exercise(kms)


def test_the_approle_reaches_nothing_beyond_its_own_keys_and_secrets(bao: Bao) -> None:
    own = bao.kms()
    own.write_secret("psp/stripe-api-key-probe", SecretStr("mine"))
    bao.admin().secrets.kv.v2.create_or_update_secret(path="other-app/db", secret={"value": "x"})
    # The same AppRole configured with another app's prefix.
    stranger = open_kms(bao.settings().model_copy(update={"vault_prefix": "other"}))
    for attempt, refused in [
        (lambda: stranger.wrap("system", DATA_KEY, context="c"), "creating key other-system"),
        (lambda: stranger.current("system"), "reading key other-system"),
        (lambda: stranger.read_secret("db"), "reading secret db"),
        (lambda: stranger.write_secret("db", SecretStr("y")), "writing secret db"),
    ]:
        with pytest.raises(
            VaultDeniedError, match=f"^Vault denied {refused} \\(permission denied\\)$"
        ):
            attempt()
    client = vault_client(bao.url, role_id=bao.role_id, secret_id=bao.secret_id)
    own.wrap("system", DATA_KEY, context="c")
    for request in [
        lambda: client.secrets.transit.export_key(
            name="ramparts-system", key_type="encryption-key"
        ),
        lambda: client.secrets.transit.backup_key(name="ramparts-system"),
        client.secrets.transit.list_keys,
        lambda: client.secrets.kv.v2.list_secrets(path="ramparts"),
        lambda: client.secrets.kv.v2.delete_metadata_and_all_versions(path="ramparts/psp/x"),
        lambda: client.secrets.kv.v2.read_secret_version(
            path="other-app/db", raise_on_deleted_version=True
        ),
        lambda: client.sys.read_policy(name=ROLE),
        lambda: client.sys.enable_secrets_engine(backend_type="transit", path="mine"),
    ]:
        with pytest.raises(vault_errors.Forbidden):
            request()
    assert own.read_secret("psp/stripe-api-key-probe") == SecretStr("mine")


EXTERNAL_SECRETS = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "external-secrets.yaml"


def test_the_approle_reaches_none_of_the_deployment_secrets(bao: Bao) -> None:
    """What the External Secrets Operator syncs into Kubernetes (the owner's database URL, the
    AppRole's own secret id, PgBouncer's userlist) is for the platform, not the application:
    a compromised API must neither read it (the owner bypasses row-level security) nor
    rewrite it (the next sync would hand the workloads the attacker's values)."""
    documents = [d for d in yaml.safe_load_all(EXTERNAL_SECRETS.read_text()) if d]
    keys = {item["extract"]["key"] for d in documents for item in d["spec"].get("dataFrom", [])} | {
        item["remoteRef"]["key"] for d in documents for item in d["spec"].get("data", [])
    }
    assert len(keys) == 3, keys  # the parse saw every path the manifests name
    admin = bao.admin()
    client = vault_client(bao.url, role_id=bao.role_id, secret_id=bao.secret_id)
    for key in sorted(keys):
        admin.secrets.kv.v2.create_or_update_secret(path=key, secret={"value": "platform"})
        with pytest.raises(vault_errors.Forbidden):
            client.secrets.kv.v2.read_secret_version(path=key, raise_on_deleted_version=True)
        with pytest.raises(vault_errors.Forbidden):
            client.secrets.kv.v2.create_or_update_secret(path=key, secret={"value": "mine"})
        # Nor through the KMS port, whatever name the application asks for.
        prefix, _, name = key.partition("/")
        if prefix == "ramparts":
            with pytest.raises(VaultDeniedError):
                bao.kms().read_secret(name)


def test_the_runtime_cannot_destroy_the_backup_or_the_system_key(bao: Bao) -> None:
    # Only a tenant's key is ever destroyed (crypto-shredding). A compromised API holding the
    # policy must not be able to make every backup, or the audit's sealed keys, unreadable:
    # allowing deletion, raising min_decryption_version (then trimming) all go through
    # keys/<name>/config.
    kms = bao.kms()
    client = vault_client(bao.url, role_id=bao.role_id, secret_id=bao.secret_id)
    for key in ("backup", "system"):
        kms.wrap(key, DATA_KEY, context="c")
        for change in ({"deletion_allowed": True}, {"min_decryption_version": 2}):
            with pytest.raises(vault_errors.Forbidden):
                client.secrets.transit.update_key_configuration(name=f"ramparts-{key}", **change)
        with pytest.raises(vault_errors.VaultError):  # not deletable, whatever the reason
            client.secrets.transit.delete_key(name=f"ramparts-{key}")
        assert kms.current(key) is not None
    exercise(kms)  # a tenant's key is still destroyed


# --- logins and their failures -------------------------------------------------------------


def test_a_wrong_approle_secret_id_is_refused_without_echoing_it(bao: Bao) -> None:
    wrong = secrets.token_hex(18)
    with pytest.raises(KmsError, match=r"^Vault refused AppRole login \(") as caught:
        vault_client(bao.url, role_id=bao.role_id, secret_id=SecretStr(wrong))
    assert wrong not in str(caught.value)
    with pytest.raises(KmsError, match=r"^Vault refused AppRole login \("):
        vault_client(bao.url, role_id=str(uuid.uuid4()), secret_id=bao.secret_id)


def test_a_revoked_or_expired_token_is_denied_with_the_operation_named(bao: Bao) -> None:
    token = policy_token(bao)
    kms = open_kms(bao.settings(token=token))
    key = tenant_key(uuid.uuid4())
    wrapped = kms.wrap(key, DATA_KEY, context="c")
    bao.admin().auth.token.revoke(token.get_secret_value())
    with pytest.raises(VaultDeniedError, match=r"^Vault denied decrypt with ramparts-tenant-") as e:
        kms.unwrap(wrapped, context="c")  # a token login has nothing to log in again with
    assert token.get_secret_value() not in str(e.value)

    short = policy_token(bao, ttl="1s", explicit_max_ttl="1s")
    expiring = open_kms(bao.settings(token=short))
    assert expiring.unwrap(wrapped, context="c") == DATA_KEY
    time.sleep(1.2)
    with pytest.raises(VaultDeniedError, match=r"^Vault denied decrypt with .*permission denied"):
        expiring.unwrap(wrapped, context="c")


def test_an_approle_login_replaces_a_revoked_token_once(bao: Bao) -> None:
    secret_id = bao.new_secret_id()
    client = vault_client(bao.url, role_id=bao.role_id, secret_id=secret_id)
    kms = VaultKms(client, relogin=lambda: approle_login(client, bao.role_id, secret_id))
    key = tenant_key(uuid.uuid4())
    wrapped = kms.wrap(key, DATA_KEY, context="c")
    first = client.token
    bao.admin().auth.token.revoke(first)
    assert kms.unwrap(wrapped, context="c") == DATA_KEY  # denied, logged in again, retried
    assert client.token != first

    admin = bao.admin()
    admin.auth.approle.destroy_secret_id(role_name=ROLE, secret_id=secret_id.get_secret_value())
    admin.auth.token.revoke(client.token)
    with pytest.raises(KmsError, match=r"^Vault refused AppRole login \(") as caught:
        kms.unwrap(wrapped, context="c")  # the secret id is gone too: no way back in
    assert secret_id.get_secret_value() not in str(caught.value)


# --- refusals --------------------------------------------------------------------------------


def test_a_missing_key_is_a_precise_error(bao: Bao) -> None:
    kms = bao.kms()
    missing = tenant_key(uuid.uuid4())
    other = kms.wrap(tenant_key(uuid.uuid4()), DATA_KEY, context="c")
    forged = missing.encode() + other[other.index(b":v1:") :]
    with pytest.raises(KmsError, match=rf"^Vault refused decrypt with ramparts-{missing} \("):
        kms.unwrap(forged, context="c")
    assert kms.current(missing) is None
    assert kms.destroy(missing) is False


def test_vault_is_reached_over_tls_with_the_configured_ca_only(bao: Bao, tmp_path: Path) -> None:
    exercise(bao.kms(tls=True))
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger, _ = write_pem(
        tmp_path, "other-ca", certificate("Another CA", stranger_key, ca=True), stranger_key
    )
    for ca_file in [None, str(stranger)]:
        with pytest.raises(KmsError, match=r"^Vault is unreachable for AppRole login \(SSLError\)"):
            vault_client(bao.tls_url, role_id=bao.role_id, secret_id=bao.secret_id, ca_file=ca_file)


class _Redirecting(BaseHTTPRequestHandler):
    """Records each request's token and body, then answers with a 307 to `target` (a 307
    keeps the method and the body), or with a 403 when it has no target."""

    target = ""
    seen: ClassVar[list[str]] = []

    def handle_one(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append(f"{self.headers.get('X-Vault-Token')} {self.rfile.read(length)!r}")
        if not self.target:  # the stranger: takes what came and denies
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


for _method in ("GET", "POST", "PUT"):
    setattr(_Redirecting, f"do_{_method}", _Redirecting.handle_one)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_not_followed_with_the_token_or_the_secret_id() -> None:
    # A redirect (a proxy in front of Vault, a misconfigured node) to another host, perhaps
    # over plain http, would take the X-Vault-Token header or the AppRole body with it:
    # requests strips only Authorization on the way.
    elsewhere = type("Elsewhere", (_Redirecting,), {"seen": []})
    with _serving(elsewhere) as stranger:
        vault = type("Vault", (_Redirecting,), {"seen": [], "target": stranger})
        with _serving(vault) as url:
            token, secret_id = secrets.token_hex(16), secrets.token_hex(16)
            with pytest.raises(KmsError, match=r"^Vault redirected AppRole login; not followed"):
                vault_client(url, role_id="r", secret_id=SecretStr(secret_id))
            kms = VaultKms(vault_client(url, token=SecretStr(token)))
            with pytest.raises(KmsError, match=r"^Vault redirected creating key ramparts-system"):
                kms.wrap("system", DATA_KEY, context="c")
    assert len(vault.seen) == 2
    assert elsewhere.seen == []


# --- the CLI end to end: rotation, crypto-shredding, the prod profile ----------------------


def transit_version(bao: Bao, key: str) -> int | None:
    """The newest version of `ramparts-<key>` as Vault itself reports it (None: no such key)."""
    try:
        answer = bao.admin().secrets.transit.read_key(name=f"ramparts-{key}")
    except vault_errors.InvalidPath:
        return None
    version: int = answer["data"]["latest_version"]
    return version


def test_keys_rotate_rewraps_and_tenants_delete_shreds_in_vault(
    bao: Bao, tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls, **bao.env())
    for command in (["migrate"], ["seed-demo"]):
        done = run(*command, env=env)
        assert done.returncode == 0, done.stderr
    with psycopg.connect(libpq(urls.owner)) as conn:
        acme = conn.execute("SELECT id FROM tenants WHERE slug = 'acme'").fetchone()[0]

        def data_keys() -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT kms_key, wrapped FROM tenant_data_keys WHERE tenant_id = %s", (acme,)
            )
            return [(kms_key, bytes(wrapped)) for kms_key, wrapped in rows]

        key = tenant_key(acme)
        assert transit_version(bao, key) == 1
        assert [(k, w[: len(k) + 10]) for k, w in data_keys()] == [
            (f"{key}:v1", f"{key}:v1:vault:v1:".encode())
        ]
        rotated = run("keys", "rotate", "--tenant", "acme", "--kms", "--json", env=env)
        assert rotated.returncode == 0, rotated.stderr
        assert json.loads(rotated.stdout) == {"kms_key": f"{key}:v2", "rewrapped": 1}
        assert transit_version(bao, key) == 2
        assert [(k, w[: len(k) + 10]) for k, w in data_keys()] == [
            (f"{key}:v2", f"{key}:v2:vault:v2:".encode())
        ]

        system = transit_version(bao, "system")
        assert system is not None
        rotated = run("keys", "rotate", "--kms", "--json", env=env)
        assert json.loads(rotated.stdout) == {"kms_key": f"system:v{system + 1}"}
        assert transit_version(bao, "system") == system + 1

        deleted = run("tenants", "delete", "acme", "--yes", "--json", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout)["data_keys_shredded"] == 1
        assert transit_version(bao, key) is None  # gone from Vault: every backup is shredded
        assert data_keys() == []
    assert not (tmp_path / "keys").exists()  # no local keystore was made on the side


def test_serve_under_prod_reaches_vault_over_tls_with_approle(
    bao: Bao, tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    """The production setup: AppRole, https, the CA in RAMPARTS_VAULT_CA_FILE (that prod
    refuses an http Vault URL is test_config's)."""
    urls = make_database(migrate=False)
    tls = bao.env(tls=True)
    migrated = run("migrate", env=owner_env(tmp_path, urls, **tls))
    assert migrated.returncode == 0, migrated.stderr
    model_key = secrets.token_urlsafe(24)
    bao.admin().secrets.kv.v2.create_or_update_secret(
        path=f"ramparts/{SHARED_KEY_NAME}", secret={"value": model_key}
    )
    # The installation's model key is kept in Vault with every other secret.
    env = {**prod_env(tmp_path, urls), **tls, "RAMPARTS_MODEL": "openai:gpt-4o-mini"}
    del env["RAMPARTS_VAULT_TOKEN"]
    port = free_port()
    with running("serve", "--port", str(port), env=env, url=f"http://127.0.0.1:{port}/readyz"):
        pass

    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger, _ = write_pem(
        tmp_path, "other-ca", certificate("Another CA", stranger_key, ca=True), stranger_key
    )
    refused = run(
        "serve", "--port", str(port), env={**env, "RAMPARTS_VAULT_CA_FILE": str(stranger)}
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "ramparts: error: Vault is unreachable for AppRole login (SSLError)"
    )
    # An empty CA setting is refused, not read as "." (the working directory as a CA store).
    empty = run("serve", "--port", str(port), env={**env, "RAMPARTS_VAULT_CA_FILE": ""})
    assert empty.returncode == 2  # a configuration error
    assert empty.stderr.strip() == (
        "ramparts: error: RAMPARTS_VAULT_CA_FILE: must name a file (unset the variable for none)"
    )
    for output in (migrated.stdout + migrated.stderr, refused.stderr):
        assert bao.secret_id.get_secret_value() not in output
        assert model_key not in output
