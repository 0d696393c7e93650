"""Builds the configured KMS: the one object through which the process reaches keys and
secrets (RAMPARTS_KMS_BACKEND=local | vault)."""

from __future__ import annotations

import secrets

from pydantic import SecretStr

from ramparts.config import KmsBackend, Profile, Settings
from ramparts.crypto.keystore import LocalKms, default_key_file
from ramparts.crypto.kms import Kms, KmsError
from ramparts.crypto.vault import VaultKms, approle_login, vault_client

__all__ = ["SERVER_SECRET_NAME", "open_kms", "server_secret"]

SERVER_SECRET_NAME = "server/secret-key"  # noqa: S105 - where it lives, not what it is


def open_kms(settings: Settings) -> Kms:
    if settings.kms_backend is KmsBackend.VAULT:
        if settings.vault_url is None:  # the settings refuse this; the check keeps mypy honest
            raise KmsError("RAMPARTS_VAULT_URL is not set")
        client = vault_client(
            settings.vault_url,
            token=settings.vault_token,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id,
            ca_file=str(settings.vault_ca_file) if settings.vault_ca_file else None,
        )
        role_id, secret_id = settings.vault_role_id, settings.vault_secret_id
        relogin = (
            (lambda: approle_login(client, role_id, secret_id))
            if role_id is not None and secret_id is not None
            else None
        )
        return VaultKms(
            client,
            relogin=relogin,
            prefix=settings.vault_prefix,
            transit_mount=settings.vault_transit_mount,
            kv_mount=settings.vault_kv_mount,
        )
    path = settings.home / "keys" / "keystore.json"
    if settings.kms_passphrase is not None:
        return LocalKms(path, passphrase=settings.kms_passphrase)
    return LocalKms(
        path,
        key_file=settings.kms_key_file or default_key_file(settings.home),
        create_key_file=settings.kms_key_file is None,
    )


def server_secret(settings: Settings, kms: Kms) -> SecretStr:
    """The key behind the web tier's server-side secrets: sealed login flows, passkey tickets,
    the login throttle's address hashes and the audit trail's redaction fingerprints.

    RAMPARTS_SECRET_KEY when set (the production guard insists on it in prod); otherwise the
    KMS's `server/secret-key`, made once per install, so no default key ever exists and none
    lies in a plain file.
    """
    if settings.secret_key is not None:
        return settings.secret_key
    stored = kms.read_secret(SERVER_SECRET_NAME)
    if stored is None:
        if settings.profile is Profile.PROD:
            raise KmsError("RAMPARTS_SECRET_KEY is not set")
        # Create-only: when two processes race, the first write wins and both read it back.
        kms.write_secret(SERVER_SECRET_NAME, SecretStr(secrets.token_urlsafe(48)), create_only=True)
        stored = kms.read_secret(SERVER_SECRET_NAME)
    if stored is None:
        raise KmsError(f"the KMS lost {SERVER_SECRET_NAME}")
    return stored
