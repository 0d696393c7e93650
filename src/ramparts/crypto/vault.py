"""The Vault KMS: HashiCorp Vault's (or OpenBao's: the same API) Transit engine wraps keys,
its KV v2 engine keeps secrets.

Each Ramparts key is a Transit key `<prefix>-<key>` (aes256-gcm96), so a tenant's key can be
destroyed alone; a signing key is a Transit key of type ed25519, which signs through
`transit/sign` and publishes only its public half. The wrap context travels as Transit's
`associated_data`, authenticated by Vault's AES-GCM. Secrets live at
`<kv mount>/data/<prefix>/<name>` under the field `value`. Login is a token or AppRole (role id
+ secret id); neither, nor any value read, is logged or put in an error message.
`deploy/vault/ramparts.hcl` is the least privilege this needs; `deploy/vault/ramparts-release.hcl`
the release signer's.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import requests
from hvac import exceptions as vault_errors
from pydantic import SecretStr
from requests import RequestException, TooManyRedirects

from ramparts.crypto.kms import (
    KmsError,
    check_key_name,
    check_secret_name,
    join_wrapped,
    split_wrapped,
)
from ramparts.crypto.signing import PublicKey, Signature

__all__ = ["VaultKms", "approle_login", "vault_client"]

T = TypeVar("T")
TIMEOUT_SECONDS = 10
MULTI_ERROR_HEAD = re.compile(r"[0-9]+ errors? occurred:")


def vault_client(
    url: str,
    *,
    token: SecretStr | None = None,
    role_id: str | None = None,
    secret_id: SecretStr | None = None,
    ca_file: str | None = None,
    approle_mount: str = "approle",
) -> hvac.Client:
    """An authenticated client: the token as given, or one from an AppRole login."""
    # An empty token, not None: given None, hvac adopts VAULT_TOKEN or ~/.vault-token, and an
    # ambient credential (a developer's root token) would travel to this URL with the login.
    # No redirect is followed: requests would resend the X-Vault-Token header (it strips only
    # Authorization) and a 307 the AppRole login's body, to any host, over plain http too.
    session = requests.Session()
    session.max_redirects = 0
    # Given a session, hvac takes its `verify` over its own argument: set the CA on both.
    session.verify = ca_file or True
    client = hvac.Client(
        url=url, token="", verify=ca_file or True, timeout=TIMEOUT_SECONDS, session=session
    )
    if token is not None:
        client.token = token.get_secret_value()
    elif role_id is not None and secret_id is not None:
        approle_login(client, role_id, secret_id, mount=approle_mount)
    else:
        raise KmsError("Vault needs a token, or an AppRole role id and secret id")
    return client


def approle_login(
    client: hvac.Client, role_id: str, secret_id: SecretStr, *, mount: str = "approle"
) -> None:
    """Log in with AppRole; the client keeps the token it gets."""
    _call(
        "AppRole login",
        lambda: client.auth.approle.login(
            role_id=role_id, secret_id=secret_id.get_secret_value(), mount_point=mount
        ),
    )


class VaultDeniedError(KmsError):
    """Vault answered 401/403: a wrong policy, or a token that expired."""


def _reasons(exc: vault_errors.VaultError) -> str:
    """Vault's own error list (no token, no plaintext) on one line: Vault wraps many errors in
    Go's multi-error text ("1 error occurred:\n\t* permission denied\n\n"), which would
    otherwise break the CLI's one-line errors."""
    reasons = []
    for error in exc.errors or []:
        for line in str(error).splitlines():
            reason = line.strip().removeprefix("* ")
            if reason and not MULTI_ERROR_HEAD.fullmatch(reason):
                reasons.append(reason)
    return "; ".join(reasons)


def _call(what: str, request: Callable[[], T]) -> T:
    try:
        return request()
    except (vault_errors.Forbidden, vault_errors.Unauthorized) as exc:
        raise VaultDeniedError(f"Vault denied {what} ({_reasons(exc)})") from None
    except vault_errors.VaultError as exc:
        kind = type(exc).__name__
        raise KmsError(f"Vault refused {what} ({kind}: {_reasons(exc)})") from None
    except TooManyRedirects:
        raise KmsError(f"Vault redirected {what}; not followed") from None
    except RequestException as exc:
        raise KmsError(f"Vault is unreachable for {what} ({type(exc).__name__})") from None


def _missing_is_none(request: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any] | None]:
    def read() -> dict[str, Any] | None:
        try:
            return request()
        except vault_errors.InvalidPath:  # 404: no such key or secret
            return None

    return read


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class VaultKms:
    def __init__(
        self,
        client: hvac.Client,
        *,
        prefix: str = "ramparts",
        transit_mount: str = "transit",
        kv_mount: str = "secret",
        relogin: Callable[[], None] | None = None,
    ) -> None:
        """`relogin` gets a fresh token (AppRole) when Vault denies one that has expired."""
        self._client = client
        self._relogin = relogin
        self._prefix = check_key_name(prefix)
        self._transit = transit_mount
        self._kv = kv_mount
        self._known: set[str] = set()
        self._mutex = threading.Lock()

    def _request(self, what: str, request: Callable[[], T]) -> T:
        try:
            return _call(what, request)
        except VaultDeniedError:
            if self._relogin is None:
                raise
            self._relogin()  # the token may have expired: one fresh login, one retry
            return _call(what, request)

    def _name(self, key: str) -> str:
        return f"{self._prefix}-{check_key_name(key)}"

    def _ensure(self, key: str) -> str:
        name = self._name(key)
        with self._mutex:
            if name in self._known:
                return name
        # Creating an existing key is a no-op in Vault, so racing processes are fine.
        self._request(
            f"creating key {name}",
            lambda: self._client.secrets.transit.create_key(
                name=name, key_type="aes256-gcm96", mount_point=self._transit
            ),
        )
        with self._mutex:
            self._known.add(name)
        return name

    def wrap(self, key: str, plaintext: bytes, *, context: str) -> bytes:
        name = self._ensure(key)
        response = self._request(
            f"encrypt with {name}",
            lambda: self._client.secrets.transit.encrypt_data(
                name=name,
                plaintext=_b64(plaintext),
                associated_data=_b64(context.encode()),
                mount_point=self._transit,
            ),
        )
        if response.get("warnings"):
            # Vault before 1.13 ignores associated_data with only a warning: the context would
            # not be bound, so nothing is wrapped there.
            raise KmsError(f"Vault warned on encrypt with {name}: {response['warnings']}")
        ciphertext: str = response["data"]["ciphertext"]  # vault:v<N>:<base64>
        version = int(ciphertext.split(":")[1].removeprefix("v"))
        return join_wrapped(key, version, ciphertext.encode())

    def unwrap(self, wrapped: bytes, *, context: str) -> bytes:
        key, _, ciphertext = split_wrapped(wrapped)
        name = self._name(key)
        response = self._request(
            f"decrypt with {name}",
            lambda: self._client.secrets.transit.decrypt_data(
                name=name,
                ciphertext=ciphertext.decode(),
                associated_data=_b64(context.encode()),
                mount_point=self._transit,
            ),
        )
        return base64.b64decode(response["data"]["plaintext"])

    def current(self, key: str) -> str | None:
        description = self._encryption_key(key)
        return None if description is None else f"{key}:v{description['latest_version']}"

    def _encryption_key(self, key: str) -> dict[str, Any] | None:
        """Transit's description of encryption key `key`, or None: never a signing key, which
        Transit would otherwise rotate or delete through the same endpoints."""
        description = self._read_key(self._name(key))
        if description is not None and description["type"] != "aes256-gcm96":
            kind = "a signing key" if description["type"] == "ed25519" else "not aes256-gcm96"
            raise KmsError(f"KMS key {key} is {kind}")
        return description

    def rotate(self, key: str) -> str:
        self._encryption_key(key)
        name = self._ensure(key)
        self._request(
            f"rotating {name}",
            lambda: self._client.secrets.transit.rotate_key(name=name, mount_point=self._transit),
        )
        current = self.current(key)
        if current is None:
            raise KmsError(f"Vault lost key {name} while rotating it")
        return current

    def destroy(self, key: str) -> bool:
        name = self._name(key)
        if self.current(key) is None:
            return False
        self._request(
            f"allowing deletion of {name}",
            lambda: self._client.secrets.transit.update_key_configuration(
                name=name, deletion_allowed=True, mount_point=self._transit
            ),
        )
        self._request(
            f"deleting {name}",
            lambda: self._client.secrets.transit.delete_key(name=name, mount_point=self._transit),
        )
        with self._mutex:
            self._known.discard(name)
        return True

    def _read_key(self, name: str) -> dict[str, Any] | None:
        response = self._request(
            f"reading key {name}",
            _missing_is_none(
                lambda: self._client.secrets.transit.read_key(name=name, mount_point=self._transit)
            ),
        )
        return None if response is None else response["data"]

    def _signing_key(self, key: str) -> dict[str, Any] | None:
        """Transit's description of signing key `key`, or None: never an encryption key."""
        name = self._name(key)
        description = self._read_key(name)
        if description is not None and description["type"] != "ed25519":
            raise KmsError(f"KMS key {key} is an encryption key")
        return description

    def rotate_signing_key(self, key: str) -> str:
        name = self._name(key)
        if self._signing_key(key) is None:
            self._request(
                f"creating signing key {name}",
                lambda: self._client.secrets.transit.create_key(
                    name=name, key_type="ed25519", mount_point=self._transit
                ),
            )
        else:
            self._request(
                f"rotating {name}",
                lambda: self._client.secrets.transit.rotate_key(
                    name=name, mount_point=self._transit
                ),
            )
        description = self._signing_key(key)
        if description is None:
            raise KmsError(f"Vault lost signing key {name} while making it")
        return f"{key}:v{description['latest_version']}"

    def public_key(self, key: str) -> PublicKey | None:
        description = self._signing_key(key)
        if description is None:
            return None
        version = description["latest_version"]
        raw = base64.b64decode(description["keys"][str(version)]["public_key"])
        return PublicKey(f"{key}:v{version}", raw)

    def sign(self, key: str, message: bytes) -> Signature:
        name = self._name(key)
        description = self._signing_key(key)
        if description is None:  # Transit would refuse too; this names the key plainly
            raise KmsError(f"KMS signing key {key} does not exist")
        response = self._request(
            f"signing with {name}",
            lambda: self._client.secrets.transit.sign_data(
                name=name,
                hash_input=_b64(message),
                key_version=description["latest_version"],
                mount_point=self._transit,
            ),
        )
        signature: str = response["data"]["signature"]  # vault:v<N>:<base64>
        _, version, value = signature.split(":", 2)
        return Signature(f"{key}:{version}", base64.b64decode(value))

    def _path(self, name: str) -> str:
        return f"{self._prefix}/{check_secret_name(name)}"

    def read_secret(self, name: str) -> SecretStr | None:
        path = self._path(name)
        response = self._request(
            f"reading secret {name}",
            _missing_is_none(
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self._kv, raise_on_deleted_version=True
                )
            ),
        )
        value = None if response is None else response["data"]["data"].get("value")
        return None if value is None else SecretStr(str(value))

    def write_secret(self, name: str, value: SecretStr, *, create_only: bool = False) -> bool:
        path = self._path(name)
        try:
            self._request(
                f"writing secret {name}",
                lambda: self._client.secrets.kv.v2.create_or_update_secret(
                    path=path,
                    secret={"value": value.get_secret_value()},
                    cas=0 if create_only else None,  # check-and-set 0: only if none exists
                    mount_point=self._kv,
                ),
            )
        except KmsError as exc:
            if create_only and "check-and-set" in str(exc):
                return False
            raise
        return True
