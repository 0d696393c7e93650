"""Model API keys per tenant (AI-3): each tenant's model calls carry its own key, read back
from an OpenAI-compatible server on loopback exactly as each request arrived; a tenant
without one is refused unless the shared key is allowed; a new key is used within seconds;
the audit trail names the key by scope and fingerprint, never the key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ramparts.ai.model_keys import (
    SHARED_KEY_NAME,
    ModelKeys,
    NoModelKeyError,
    tenant_key_name,
)
from ramparts.audit.events import Action
from ramparts.config import ModelKeyPolicy
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import ask, sign_in
from tests.audit.trail import recorded
from tests.conftest import cli_kms
from tests.live import temporary_kms
from tests.test_cli import RAMPARTS, owner_env, run

ACME_KEY = "sk-acme-0123456789abcdef"  # pragma: allowlist secret
GLOBEX_KEY = "sk-globex-0123456789abcdef"  # pragma: allowlist secret
ROTATED_KEY = "sk-acme-rotated-0123456789"  # pragma: allowlist secret
SHARED_KEY = "sk-shared-0123456789abcdef"  # pragma: allowlist secret


class KeyRecorder:
    """An OpenAI-compatible server that answers with text and keeps, per request, the
    Authorization header and the user's message it came with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                asked = [m["content"] for m in body["messages"] if m["role"] == "user"]
                seen.append((self.headers.get("Authorization"), asked[-1] if asked else ""))
                answer = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": "Noted."}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys_for(self, message: str) -> list[str | None]:
        return [key for key, asked in self.seen if asked == message]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyRecorder]:
    server = KeyRecorder()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield server
    server.server.shutdown()
    server.server.server_close()


def fingerprint_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def test_each_tenant_is_served_with_its_own_key_and_one_without_is_refused(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, recorder: KeyRecorder
) -> None:
    server = serve_app(model="openai:test-model", model_region="eu")
    acme, acme_headers = sign_in(server, urls, kms, BUYER)
    globex, globex_headers = sign_in(server, urls, kms, BUYER)
    keyless, keyless_headers = sign_in(server, urls, kms, BUYER)
    kms.write_secret(tenant_key_name(acme.tenant_id), SecretStr(ACME_KEY))
    kms.write_secret(tenant_key_name(globex.tenant_id), SecretStr(GLOBEX_KEY))

    assert ask(server, acme_headers, "acme asks").status_code == 200
    assert ask(server, globex_headers, "globex asks").status_code == 200
    refused = ask(server, keyless_headers, "keyless asks")

    assert recorder.keys_for("acme asks") == [f"Bearer {ACME_KEY}"]
    assert recorder.keys_for("globex asks") == [f"Bearer {GLOBEX_KEY}"]
    assert refused.status_code == 503
    assert refused.json()["type"] == "urn:ramparts:problem:no-model-key"
    assert recorder.keys_for("keyless asks") == []  # never sent, with no key or another's

    answered = recorded(urls, acme.tenant_id, Action.ASSISTANT_ANSWERED)
    details = answered[-1]["details"]
    assert details["credential"] == {"scope": "tenant", "fingerprint": fingerprint_of(ACME_KEY)}
    trail = json.dumps(recorded(urls, acme.tenant_id))
    assert ACME_KEY not in trail
    kept = recorded(urls, keyless.tenant_id, Action.ASSISTANT_REFUSED)
    assert [event["details"] for event in kept] == [{"kind": "no-model-key"}]


def test_the_shared_key_serves_a_tenant_without_one_only_when_allowed(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    recorder: KeyRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SHARED_KEY)
    server = serve_app(model="openai:test-model", model_region="eu", model_keys="shared")
    own, own_headers = sign_in(server, urls, kms, BUYER)
    keyless, keyless_headers = sign_in(server, urls, kms, BUYER)
    kms.write_secret(tenant_key_name(own.tenant_id), SecretStr(ACME_KEY))

    assert ask(server, keyless_headers, "keyless asks").status_code == 200
    assert ask(server, own_headers, "own asks").status_code == 200

    assert recorder.keys_for("keyless asks") == [f"Bearer {SHARED_KEY}"]
    assert recorder.keys_for("own asks") == [f"Bearer {ACME_KEY}"]  # its own comes first
    details = recorded(urls, keyless.tenant_id, Action.ASSISTANT_ANSWERED)[-1]["details"]
    assert details["credential"] == {"scope": "shared", "fingerprint": fingerprint_of(SHARED_KEY)}


def test_keys_are_read_once_per_refresh_and_a_new_one_is_used_after_it(tmp_path: Path) -> None:
    asyncio.run(read_once_per_refresh(tmp_path))


async def read_once_per_refresh(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    reads: list[str] = []
    read = kms.read_secret

    def counted(name: str) -> SecretStr | None:
        reads.append(name)
        return read(name)

    kms.read_secret = counted  # type: ignore[method-assign]
    now = [0.0]
    keys = ModelKeys(kms, policy=ModelKeyPolicy.TENANT, refresh=5.0, clock=lambda: now[0])
    tenant, other = uuid.uuid4(), uuid.uuid4()
    kms.write_secret(tenant_key_name(tenant), SecretStr(ACME_KEY))
    kms.write_secret(SHARED_KEY_NAME, SecretStr(SHARED_KEY))

    for _ in range(3):
        assert (await keys.key_for(tenant)).value.get_secret_value() == ACME_KEY
    assert reads == [tenant_key_name(tenant)]  # one KMS read for three calls

    kms.write_secret(tenant_key_name(tenant), SecretStr(ROTATED_KEY))
    now[0] = 4.9
    assert (await keys.key_for(tenant)).value.get_secret_value() == ACME_KEY
    now[0] = 5.0
    assert (await keys.key_for(tenant)).value.get_secret_value() == ROTATED_KEY

    with pytest.raises(NoModelKeyError):  # the shared key exists, but the policy says no
        await keys.key_for(other)
    kms.write_secret(tenant_key_name(tenant), SecretStr(""))  # removed
    now[0] = 10.0
    with pytest.raises(NoModelKeyError):
        await keys.key_for(tenant)

    shared = ModelKeys(kms, policy=ModelKeyPolicy.SHARED)
    assert (await shared.key_for(other)).scope == "shared"
    assert (await shared.key_for(other)).value.get_secret_value() == SHARED_KEY


def test_set_model_key_takes_the_key_from_stdin_and_prints_only_its_fingerprint(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    env = owner_env(tmp_path, urls)
    assert run("migrate", env=env).returncode == 0
    seeded = run("seed-demo", "--json", env=env)
    assert seeded.returncode == 0, seeded.stderr
    acme = next(t for t in json.loads(seeded.stdout)["tenants"] if t["slug"] == "acme")

    def set_key(*args: str, given: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RAMPARTS, "keys", "set-model-key", *args, "--json"],
            env=env,
            input=given,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    done = set_key("--tenant", "acme", given=ACME_KEY + "\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "tenant": "acme",
        "shared": False,
        "removed": False,
        "fingerprint": fingerprint_of(ACME_KEY),
    }
    assert ACME_KEY not in done.stdout + done.stderr
    kms = cli_kms(tmp_path)
    stored = kms.read_secret(tenant_key_name(uuid.UUID(acme["id"])))
    assert stored is not None
    assert stored.get_secret_value() == ACME_KEY
    assert kms.read_secret(SHARED_KEY_NAME) is None

    shared = set_key("--shared", given=SHARED_KEY + "\n")
    assert shared.returncode == 0, shared.stderr
    assert cli_cached(tmp_path, SHARED_KEY_NAME) == SHARED_KEY

    removed = set_key("--tenant", "acme", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert cli_cached(tmp_path, tenant_key_name(uuid.UUID(acme["id"]))) == ""

    for args, given, said in [
        (("--tenant", "acme", "--shared"), ACME_KEY, "--tenant SLUG or --shared"),
        ((), ACME_KEY, "--tenant SLUG or --shared"),
        (("--tenant", "nobody"), ACME_KEY, "no tenant 'nobody'"),
        (("--tenant", "acme"), "\n", "one line of printable characters"),
        (("--tenant", "acme"), "two words\n", "one line of printable characters"),
    ]:
        wrong = set_key(*args, given=given)
        assert wrong.returncode != 0
        assert said in wrong.stderr, wrong.stderr
    assert cli_cached(tmp_path, tenant_key_name(uuid.UUID(acme["id"]))) == ""


def cli_cached(home: Path, name: str) -> str | None:
    value = cli_kms(home).read_secret(name)
    return None if value is None else value.get_secret_value()
