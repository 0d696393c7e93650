"""The local KMS: a keystore file under RAMPARTS_HOME, for development and stage.

`keys/keystore.json` (mode 0600) holds every key version, signing key version (the Ed25519
private key's 32 raw bytes) and secret, each sealed with
AES-256-GCM under a key-encryption key (KEK) that is never stored beside it: derived with
scrypt from a passphrase (RAMPARTS_KMS_PASSPHRASE), or with HKDF from a key file
(RAMPARTS_KMS_KEY_FILE) that must live outside any git checkout. Writers take a file lock and
replace the file atomically, so the server and a `ramparts keys rotate` can share it. The
production guard refuses this backend: production keys live in Vault.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pydantic import SecretStr

from ramparts.crypto.kms import (
    KmsError,
    check_key_name,
    check_secret_name,
    join_wrapped,
    split_wrapped,
)
from ramparts.crypto.signing import PublicKey, Signature

__all__ = ["LocalKms", "default_key_file"]

FORMAT = "ramparts-keystore/1"
NONCE_BYTES = 12
MIN_KEY_FILE_BYTES = 32
SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~32 MiB and ~0.1 s per process start
CHECK = b"ramparts-keystore"
T = TypeVar("T")
Document = dict[str, Any]


def default_key_file(home: Path, *, config_home: Path | None = None) -> Path:
    """Where dev and stage keep a generated KEK file when none is configured: the user's
    config directory, outside the checkout and outside RAMPARTS_HOME (so a copy of the data
    directory alone opens nothing)."""
    base = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    tag = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return base / "ramparts" / f"kek-{tag}.key"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def _inside_git_checkout(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        if (parent / ".git").exists():
            return parent
    return None


class LocalKms:
    """Named, versioned keys and secrets in one sealed keystore file."""

    def __init__(
        self,
        path: Path,
        *,
        passphrase: SecretStr | None = None,
        key_file: Path | None = None,
        create_key_file: bool = False,
    ) -> None:
        if (passphrase is None) == (key_file is None):
            raise KmsError("the local KMS needs exactly one of a passphrase or a key file")
        self._path = path
        self._lock_path = path.with_suffix(".lock")
        self._mutex = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._document: Document = {}
        self._ciphers: dict[tuple[str, int], AESGCM] = {}
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._locked():
            exists = path.exists()
            document = self._read() if exists else self._new_document(passphrase)
            # A key file is made only with a new keystore: beside an existing one, a missing key
            # file is an error to fix (a moved HOME), not a reason to make a different key.
            make_key_file = create_key_file and not exists
            self._kek = AESGCM(self._derive(document["kdf"], passphrase, key_file, make_key_file))
            if not exists:
                document["check"] = self._seal(CHECK, "check")
                self._write(document)
            elif self._open(document["check"], "check") != CHECK:
                raise KmsError(f"the keystore {path} is damaged")

    # --- the KEK -------------------------------------------------------------------------

    @staticmethod
    def _new_document(passphrase: SecretStr | None) -> Document:
        salt = _b64(secrets.token_bytes(16))
        kdf = (
            {"name": "scrypt", "salt": salt, **SCRYPT}
            if passphrase is not None
            else {"name": "hkdf-sha256", "salt": salt}
        )
        return {"format": FORMAT, "kdf": kdf, "keys": {}, "signing_keys": {}, "secrets": {}}

    def _derive(
        self,
        kdf: dict[str, Any],
        passphrase: SecretStr | None,
        key_file: Path | None,
        create_key_file: bool,
    ) -> bytes:
        salt = _unb64(kdf["salt"])
        if kdf["name"] == "scrypt":
            if passphrase is None:
                raise KmsError(
                    f"{self._path} is protected by a passphrase: set RAMPARTS_KMS_PASSPHRASE"
                )
            return Scrypt(salt=salt, length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
                passphrase.get_secret_value().encode()
            )
        if key_file is None:
            raise KmsError(f"{self._path} is protected by a key file: set RAMPARTS_KMS_KEY_FILE")
        material = self._key_file_bytes(key_file, create_key_file)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=FORMAT.encode()).derive(
            material
        )

    @staticmethod
    def _key_file_bytes(key_file: Path, create: bool) -> bytes:
        checkout = _inside_git_checkout(key_file)
        if checkout is not None:
            raise KmsError(f"the KMS key file must live outside the git checkout {checkout}")
        if create and not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(MIN_KEY_FILE_BYTES))
        try:
            if key_file.stat().st_mode & 0o077:
                raise KmsError(f"the KMS key file {key_file} is readable by others: chmod 600 it")
            material = key_file.read_bytes()
        except OSError as exc:
            raise KmsError(f"cannot read the KMS key file {key_file}: {exc.strerror}") from None
        if len(material) < MIN_KEY_FILE_BYTES:
            raise KmsError(f"the KMS key file {key_file} holds under {MIN_KEY_FILE_BYTES} bytes")
        return material

    def _seal(self, value: bytes, label: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return _b64(nonce + self._kek.encrypt(nonce, value, f"{FORMAT}:{label}".encode()))

    def _open(self, sealed: str, label: str) -> bytes:
        try:
            raw = _unb64(sealed)
            return self._kek.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"{FORMAT}:{label}".encode()
            )
        except (InvalidTag, ValueError):  # ValueError: bad base64 or a truncated entry
            raise KmsError(
                f"the KMS passphrase or key file does not open {self._path} ({label})"
            ) from None

    # --- the file ------------------------------------------------------------------------

    def _locked(self) -> _FileLock:
        return _FileLock(self._lock_path)

    def _read(self) -> Document:
        try:
            document: Document = json.loads(self._path.read_text())
        except (OSError, ValueError) as exc:
            raise KmsError(f"cannot read the keystore {self._path}: {exc}") from None
        if document.get("format") != FORMAT:
            raise KmsError(f"{self._path} is not a {FORMAT} keystore")
        return document

    def _write(self, document: Document) -> None:
        temporary = self._path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        # The rename itself must survive a crash: a destroyed key must stay destroyed.
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _current_document(self) -> Document:
        """The keystore as on disk now: another process may have rotated a key."""
        stat = self._path.stat()
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if signature != self._signature:
            self._document, self._signature = self._read(), signature
        return self._document

    def _mutate(self, change: Callable[[Document], T]) -> T:
        with self._mutex, self._locked():
            document = self._read()
            result = change(document)
            self._write(document)
            self._signature = None
            return result

    # --- keys ----------------------------------------------------------------------------

    def _cipher(self, key: str, version: int) -> AESGCM:
        # Asked of the file every time (a stat, and a re-read only when it changed), so a key
        # destroyed by another process stops working here at once, cached or not.
        with self._mutex:
            sealed = self._current_document()["keys"].get(key, {}).get(str(version))
            if sealed is None:
                self._ciphers.pop((key, version), None)
                raise KmsError(f"KMS key {key} v{version} does not exist (destroyed or never made)")
            cipher = self._ciphers.get((key, version))
        if cipher is None:
            cipher = AESGCM(self._open(sealed, f"key:{key}:{version}"))
            with self._mutex:
                self._ciphers[(key, version)] = cipher
        return cipher

    def _versions(self, key: str) -> list[int]:
        with self._mutex:
            document = self._current_document()
            _refuse_other_kind(document, key, "signing_keys")
            return sorted(int(v) for v in document["keys"].get(key, {}))

    def current(self, key: str) -> str | None:
        versions = self._versions(check_key_name(key))
        return f"{key}:v{versions[-1]}" if versions else None

    def rotate(self, key: str) -> str:
        check_key_name(key)

        def add_version(document: Document) -> int:
            _refuse_other_kind(document, key, "signing_keys")
            versions = document["keys"].setdefault(key, {})
            version = max((int(v) for v in versions), default=0) + 1
            versions[str(version)] = self._seal(secrets.token_bytes(32), f"key:{key}:{version}")
            return version

        return f"{key}:v{self._mutate(add_version)}"

    def wrap(self, key: str, plaintext: bytes, *, context: str) -> bytes:
        versions = self._versions(check_key_name(key))
        if not versions:
            self._mutate(lambda document: self._first_version(document, key))
            versions = self._versions(key)
        version = versions[-1]
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._cipher(key, version).encrypt(nonce, plaintext, _aad(key, version, context))
        return join_wrapped(key, version, nonce + sealed)

    def _first_version(self, document: Document, key: str) -> None:
        _refuse_other_kind(document, key, "signing_keys")
        versions = document["keys"].setdefault(key, {})
        if not versions:  # another process may have made it meanwhile
            versions["1"] = self._seal(secrets.token_bytes(32), f"key:{key}:1")

    def unwrap(self, wrapped: bytes, *, context: str) -> bytes:
        key, version, payload = split_wrapped(wrapped)
        cipher = self._cipher(key, version)
        try:
            return cipher.decrypt(
                payload[:NONCE_BYTES], payload[NONCE_BYTES:], _aad(key, version, context)
            )
        except (InvalidTag, ValueError):  # ValueError: a truncated blob
            raise KmsError(f"a blob wrapped by {key} v{version} does not unwrap here") from None

    def destroy(self, key: str) -> bool:
        check_key_name(key)

        def remove(document: Document) -> bool:
            _refuse_other_kind(document, key, "signing_keys")
            return document["keys"].pop(key, None) is not None

        destroyed = self._mutate(remove)
        with self._mutex:
            self._ciphers = {k: v for k, v in self._ciphers.items() if k[0] != key}
        return destroyed

    # --- signing keys --------------------------------------------------------------------

    def rotate_signing_key(self, key: str) -> str:
        check_key_name(key)

        def add_version(document: Document) -> int:
            _refuse_other_kind(document, key, "keys")
            versions = document.setdefault("signing_keys", {}).setdefault(key, {})
            version = max((int(v) for v in versions), default=0) + 1
            private = Ed25519PrivateKey.generate().private_bytes_raw()
            versions[str(version)] = self._seal(private, f"signing:{key}:{version}")
            return version

        return f"{key}:v{self._mutate(add_version)}"

    def _newest_signing_key(self, key: str) -> tuple[str, Ed25519PrivateKey] | None:
        check_key_name(key)
        with self._mutex:
            document = self._current_document()
            _refuse_other_kind(document, key, "keys")
            versions = document.get("signing_keys", {}).get(key, {})
            if not versions:
                return None
            version = max(int(v) for v in versions)
            sealed = versions[str(version)]
        private = self._open(sealed, f"signing:{key}:{version}")
        return f"{key}:v{version}", Ed25519PrivateKey.from_private_bytes(private)

    def public_key(self, key: str) -> PublicKey | None:
        newest = self._newest_signing_key(key)
        if newest is None:
            return None
        ref, private = newest
        return PublicKey(ref, private.public_key().public_bytes_raw())

    def sign(self, key: str, message: bytes) -> Signature:
        newest = self._newest_signing_key(key)
        if newest is None:
            raise KmsError(f"KMS signing key {key} does not exist")
        ref, private = newest
        return Signature(ref, private.sign(message))

    # --- secrets -------------------------------------------------------------------------

    def read_secret(self, name: str) -> SecretStr | None:
        check_secret_name(name)
        with self._mutex:
            sealed = self._current_document()["secrets"].get(name)
        return None if sealed is None else SecretStr(self._open(sealed, f"secret:{name}").decode())

    def write_secret(self, name: str, value: SecretStr, *, create_only: bool = False) -> bool:
        check_secret_name(name)
        sealed = self._seal(value.get_secret_value().encode(), f"secret:{name}")

        def store(document: Document) -> bool:
            if create_only and name in document["secrets"]:
                return False
            document["secrets"][name] = sealed
            return True

        return self._mutate(store)


def _refuse_other_kind(document: Document, key: str, other: str) -> None:
    """One name, one kind of key: as in Vault, where both kinds share the Transit namespace."""
    if key in document.get(other, {}):
        kind = "a signing key" if other == "signing_keys" else "an encryption key"
        raise KmsError(f"KMS key {key} is {kind}")


def _aad(key: str, version: int, context: str) -> bytes:
    return f"{key}:v{version}:{context}".encode()


class _FileLock:
    """An exclusive lock on a side file, held across processes while the keystore changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
