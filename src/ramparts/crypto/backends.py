"""Builds the configured KMS: the one object through which the process reaches keys and
secrets (RAMPARTS_KMS_BACKEND=local | vault)."""

from __future__ import annotations

from ramparts.config import KmsBackend, Settings
from ramparts.crypto.keystore import LocalKms, default_key_file
from ramparts.crypto.kms import Kms, KmsError
from ramparts.crypto.vault import VaultKms, vault_client

__all__ = ["open_kms"]


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
        return VaultKms(
            client,
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
