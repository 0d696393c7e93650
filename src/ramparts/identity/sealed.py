"""The identity domain's encrypted columns (AZ-5): each declared once, for the services that
seal and open them; the declaration registers it for key rotation and tenant shredding
(`crypto.sealing.encrypted_columns`)."""

from __future__ import annotations

from ramparts.crypto.sealing import EncryptedColumn

__all__ = [
    "IDP_CLIENT_SECRET",
    "PASSKEY_PUBLIC_KEY",
    "RECOVERY_CODE_INDEX",
    "TOTP_SECRET",
]

TOTP_SECRET = EncryptedColumn("totp_credentials", "sealed_secret", row="user_id")
# A passkey's public key is not a secret, but it ties a person to their authenticators.
PASSKEY_PUBLIC_KEY = EncryptedColumn(
    "webauthn_credentials", "public_key", row="encode(credential_id, 'hex')"
)
IDP_CLIENT_SECRET = EncryptedColumn(
    "tenant_identity_providers", "sealed_client_secret", row="tenant_id"
)
# Recovery codes are stored as blind indexes (a per-tenant keyed HMAC), never as plain hashes.
RECOVERY_CODE_INDEX = "recovery_codes.code_hash"
