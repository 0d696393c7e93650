"""The KMS port: one contract for every backend (the local keystore, and Vault as a real
OpenBao server logged in with the production AppRole policy, `tests.crypto.bao`), the local
keystore's own protections, and what only a recorded Vault exchange can show."""

from __future__ import annotations

import base64
import json
import secrets
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ramparts.config import Profile, Settings
from ramparts.crypto.backends import SERVER_SECRET_NAME, server_secret
from ramparts.crypto.keystore import LocalKms
from ramparts.crypto.kms import Kms, KmsError, key_ref, split_wrapped, tenant_key
from ramparts.crypto.vault import VaultKms, vault_client
from tests.crypto import vault_exchange as recorded
from tests.crypto.bao import Bao
from tests.live import temporary_kms

DATA_KEY = b"\x07" * 32
PSP_KEY = "sk_test_51Hx" + "Q" * 24  # pragma: allowlist secret


@pytest.fixture(params=["local", "vault"])
def kms(request: pytest.FixtureRequest, tmp_path: Path) -> Kms:
    if request.param == "local":
        return temporary_kms(tmp_path)
    bao: Bao = request.getfixturevalue("bao")
    return bao.kms()  # AppRole login, holding only deploy/vault/ramparts.hcl


def test_wrapped_keys_open_only_in_their_context(kms: Kms) -> None:
    tenant = tenant_key(uuid.uuid4())
    wrapped = kms.wrap(tenant, DATA_KEY, context="data:1")
    assert DATA_KEY not in wrapped
    assert key_ref(wrapped) == f"{tenant}:v1"
    assert kms.unwrap(wrapped, context="data:1") == DATA_KEY
    key, version, payload = split_wrapped(wrapped)
    flipped = bytearray(payload)
    flipped[-3] ^= 1
    other = tenant_key(uuid.uuid4())
    kms.wrap(other, DATA_KEY, context="data:1")  # the other tenant's key exists too
    for attempt in [
        lambda: kms.unwrap(wrapped, context="data:2"),  # another context
        lambda: kms.unwrap(wrapped.replace(tenant.encode(), other.encode(), 1), context="data:1"),
        lambda: kms.unwrap(f"{key}:v{version}:".encode() + bytes(flipped), context="data:1"),
        lambda: kms.unwrap(b"not a wrapped key", context="data:1"),
    ]:
        with pytest.raises(KmsError):
            attempt()


def test_rotation_keeps_earlier_wrappings_readable(kms: Kms) -> None:
    key = tenant_key(uuid.uuid4())
    assert kms.current(key) is None
    first = kms.wrap(key, DATA_KEY, context="c")
    assert kms.rotate(key) == f"{key}:v2" == kms.current(key)
    second = kms.wrap(key, DATA_KEY, context="c")
    assert key_ref(second) == f"{key}:v2"
    assert kms.unwrap(first, context="c") == kms.unwrap(second, context="c") == DATA_KEY


def test_destroying_a_key_leaves_what_it_wrapped_unreadable(kms: Kms) -> None:
    key = tenant_key(uuid.uuid4())
    wrapped = kms.wrap(key, DATA_KEY, context="c")
    assert kms.destroy(key) is True
    assert kms.current(key) is None
    with pytest.raises(KmsError):
        kms.unwrap(wrapped, context="c")
    assert kms.destroy(key) is False
    kms.wrap(key, DATA_KEY, context="c")  # a new key under the old name opens nothing old
    with pytest.raises(KmsError):
        kms.unwrap(wrapped, context="c")


def test_secrets_are_stored_and_read_back(kms: Kms) -> None:
    assert kms.read_secret("psp/stripe-api-key") is None
    kms.write_secret("psp/stripe-api-key", SecretStr(PSP_KEY))
    read = kms.read_secret("psp/stripe-api-key")
    assert read is not None
    assert read.get_secret_value() == PSP_KEY
    assert PSP_KEY not in repr(read)
    kms.write_secret("psp/stripe-api-key", SecretStr("rotated"))
    assert kms.read_secret("psp/stripe-api-key") == SecretStr("rotated")
    for bad in ["../etc/passwd", "Upper", "", "a" * 200]:
        with pytest.raises(KmsError, match="bad secret name"):
            kms.read_secret(bad)
    with pytest.raises(KmsError, match="bad KMS key name"):
        kms.wrap("system/../x", DATA_KEY, context="c")


def test_create_only_writes_keep_the_first_value(kms: Kms) -> None:
    name = f"server/secret-{secrets.token_hex(4)}"
    assert kms.write_secret(name, SecretStr("one"), create_only=True) is True
    assert kms.write_secret(name, SecretStr("two"), create_only=True) is False
    assert kms.read_secret(name) == SecretStr("one")
    assert kms.write_secret(name, SecretStr("three")) is True
    assert kms.read_secret(name) == SecretStr("three")


# --- the local keystore ------------------------------------------------------------------


def test_the_keystore_is_private_and_holds_nothing_in_the_clear(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    kms.write_secret("model/openai", SecretStr(PSP_KEY))
    wrapped = kms.wrap("system", DATA_KEY, context="c")
    keystore = tmp_path / "keystore.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o600
    raw = keystore.read_bytes()
    assert PSP_KEY.encode() not in raw
    assert b"sk_test" not in raw
    assert DATA_KEY not in raw
    assert base64.b64encode(DATA_KEY) not in raw
    assert kms.unwrap(wrapped, context="c") == DATA_KEY


def test_another_process_sees_rotations_and_secrets(tmp_path: Path) -> None:
    first, second = temporary_kms(tmp_path), temporary_kms(tmp_path)
    wrapped = first.wrap("system", DATA_KEY, context="c")
    assert second.unwrap(wrapped, context="c") == DATA_KEY
    second.rotate("system")
    second.write_secret("webhook/psp", SecretStr("whsec"))
    assert first.current("system") == "system:v2"
    assert key_ref(first.wrap("system", DATA_KEY, context="c")) == "system:v2"
    assert first.read_secret("webhook/psp") == SecretStr("whsec")


def test_a_key_destroyed_by_another_process_stops_working_here_at_once(tmp_path: Path) -> None:
    server, operator = temporary_kms(tmp_path), temporary_kms(tmp_path)
    key = tenant_key(uuid.uuid4())
    wrapped = server.wrap(key, DATA_KEY, context="c")
    assert server.unwrap(wrapped, context="c") == DATA_KEY  # its cipher is cached now
    assert operator.destroy(key) is True
    with pytest.raises(KmsError, match="does not exist"):
        server.unwrap(wrapped, context="c")


def test_create_only_secrets_keep_the_first_value(tmp_path: Path) -> None:
    first, second = temporary_kms(tmp_path), temporary_kms(tmp_path)
    assert first.write_secret("server/secret-key", SecretStr("one"), create_only=True) is True
    assert second.write_secret("server/secret-key", SecretStr("two"), create_only=True) is False
    assert second.read_secret("server/secret-key") == SecretStr("one")


def test_a_missing_key_file_is_not_replaced_beside_an_existing_keystore(tmp_path: Path) -> None:
    temporary_kms(tmp_path).write_secret("a", SecretStr("b"))
    (tmp_path / "kek").unlink()  # say HOME moved, so the key file is looked for elsewhere
    with pytest.raises(KmsError, match="cannot read the KMS key file"):
        temporary_kms(tmp_path)
    assert not (tmp_path / "kek").exists()


def test_the_wrong_key_file_or_passphrase_opens_nothing(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    wrapped = kms.wrap("system", DATA_KEY, context="c")
    stranger = tmp_path / "other.kek"
    stranger.write_bytes(secrets.token_bytes(32))
    stranger.chmod(0o600)
    keystore = tmp_path / "keystore.json"
    with pytest.raises(KmsError, match="does not open"):
        LocalKms(keystore, key_file=stranger)
    with pytest.raises(KmsError, match="protected by a key file"):
        LocalKms(keystore, passphrase=SecretStr("correct horse battery staple"))
    protected = tmp_path / "protected" / "keystore.json"
    LocalKms(protected, passphrase=SecretStr("correct horse battery staple")).write_secret(
        "a", SecretStr("b")
    )
    with pytest.raises(KmsError, match="does not open"):
        LocalKms(protected, passphrase=SecretStr("wrong horse battery staple"))
    with pytest.raises(KmsError, match="protected by a passphrase"):
        LocalKms(protected, key_file=tmp_path / "kek")
    reopened = LocalKms(protected, passphrase=SecretStr("correct horse battery staple"))
    assert reopened.read_secret("a") == SecretStr("b")
    assert kms.unwrap(wrapped, context="c") == DATA_KEY


def test_key_files_must_be_private_long_and_outside_the_checkout(tmp_path: Path) -> None:
    loose = tmp_path / "loose.kek"
    loose.write_bytes(secrets.token_bytes(32))
    loose.chmod(0o644)
    with pytest.raises(KmsError, match="readable by others"):
        LocalKms(tmp_path / "a.json", key_file=loose)
    short = tmp_path / "short.kek"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(KmsError, match="under 32 bytes"):
        LocalKms(tmp_path / "b.json", key_file=short)
    inside = Path(__file__).parent / "kek-in-checkout"
    with pytest.raises(KmsError, match="outside the git checkout"):
        LocalKms(tmp_path / "c.json", key_file=inside)
    assert not inside.exists()
    with pytest.raises(KmsError, match="exactly one"):
        LocalKms(tmp_path / "d.json")


# --- Vault: the recorded exchange --------------------------------------------------------


@dataclass
class Replay:
    """The recorded exchange still to play, and every request that did not match it."""

    exchange: list[dict[str, Any]]
    mismatches: list[str] = field(default_factory=list)

    def answer(self, got: dict[str, Any]) -> dict[str, Any]:
        if not self.exchange:
            self.mismatches.append(f"unexpected {got}")
            return {"status": 500}
        expected = self.exchange.pop(0)
        if got != expected["request"]:
            self.mismatches.append(f"expected {expected['request']}, got {got}")
        response: dict[str, Any] = expected["response"]
        return response


def replay_handler(replay: Replay) -> type[BaseHTTPRequestHandler]:
    """A handler that checks each request (method, path, token header, JSON body) against the
    next recorded one and answers with the recorded response."""

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            got = {
                "method": self.command,
                "path": self.path,
                "token": self.headers.get("X-Vault-Token"),
                "json": json.loads(self.rfile.read(length)) if length else None,
            }
            response = replay.answer(got)
            payload = json.dumps(response["json"]).encode() if "json" in response else b""
            self.send_response(response["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: object) -> None:
            pass

    for method in ("GET", "POST", "PUT", "DELETE"):
        setattr(Handler, f"do_{method}", Handler.handle_one)
    return Handler


@pytest.fixture
def recorded_vault() -> Iterator[tuple[str, Replay]]:
    replay = Replay(list(recorded.EXCHANGE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), replay_handler(replay))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", replay
    finally:
        server.shutdown()
        server.server_close()


def test_a_vault_that_ignores_the_context_wraps_nothing_and_no_ambient_token_travels(
    recorded_vault: tuple[str, Replay], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", recorded.AMBIENT_TOKEN)  # hvac would adopt it
    url, replay = recorded_vault
    client = vault_client(url, role_id=recorded.ROLE_ID, secret_id=SecretStr(recorded.SECRET_ID))
    kms = VaultKms(client)
    with pytest.raises(KmsError, match=r"^Vault warned on encrypt with ramparts-system: ") as e:
        kms.wrap("system", base64.b64decode(recorded.PLAINTEXT), context=recorded.CONTEXT)
    for secret in (recorded.TOKEN, recorded.SECRET_ID, recorded.AMBIENT_TOKEN):
        assert secret not in str(e.value)
    assert replay.mismatches == []
    assert replay.exchange == [], f"not replayed: {replay.exchange}"


def test_the_server_secret_is_made_once_and_kept_in_the_kms(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path / "kms")
    settings = Settings(home=tmp_path / "home")
    made = server_secret(settings, kms)
    assert len(made.get_secret_value()) >= 64
    assert server_secret(settings, temporary_kms(tmp_path / "kms")) == made  # another process
    assert kms.read_secret(SERVER_SECRET_NAME) == made
    assert not (tmp_path / "home").exists()  # no plain key file beside the data
    given = SecretStr("q8Z2vN4xR7tL1mK9pW3sY6cB0dF5hJ8e")  # pragma: allowlist secret
    assert server_secret(Settings(secret_key=given), kms) == given
    with pytest.raises(KmsError, match="RAMPARTS_SECRET_KEY is not set"):
        server_secret(Settings(profile=Profile.PROD), temporary_kms(tmp_path / "empty"))
