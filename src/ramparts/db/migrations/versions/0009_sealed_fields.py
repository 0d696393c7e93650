"""Sealed fields (AZ-5): secrets at rest are either fields sealed under the tenant's data key
or blobs wrapped by the KMS, and the database refuses anything else.

`sealed_field` is a domain over bytea that accepts only the sealed-field layout (a 4-byte key
version, 12-byte nonce, AES-GCM ciphertext and tag): a TOTP secret, a passkey's public key or
an IdP client secret written in plaintext, by a bug or by hand, is refused. System secrets
(token and audit signing keys) must be KMS blobs of the `system` key.

Revision ID: 0009_sealed_fields
Revises: 0008_tenant_keys
"""

import sqlalchemy as sa
from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.migrate import MigrationError

revision = "0009_sealed_fields"
down_revision = "0008_tenant_keys"
branch_labels = None
depends_on = None


#: Rows that hold secrets sealed by the local sealer that this revision retires.
LEGACY_SECRETS = """
    SELECT (SELECT count(*) FROM signing_keys) + (SELECT count(*) FROM audit_signing_keys)
         + (SELECT count(*) FROM totp_credentials) + (SELECT count(*) FROM webauthn_credentials)
         + (SELECT count(*) FROM tenant_identity_providers
            WHERE sealed_client_secret IS NOT NULL)
         + (SELECT count(*) FROM tenant_data_keys)
"""


def upgrade() -> None:
    if op.get_bind().execute(sa.text(LEGACY_SECRETS)).scalar():
        # Their key was a file that this revision no longer reads; moving them would need it
        # and the old code. Ramparts had no release before this, so no production data exists.
        raise MigrationError(
            "this database holds secrets sealed before the KMS (revision 0009) that cannot be "
            "moved automatically; recreate it (for the embedded database, delete RAMPARTS_HOME)"
        )
    for statement in [
        # The data key version that sealed a field: the re-encryption job picks older ones.
        """
        CREATE FUNCTION ramparts_sealed_version(sealed bytea) RETURNS integer
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT (get_byte(sealed, 0) << 24) | (get_byte(sealed, 1) << 16)
                 | (get_byte(sealed, 2) << 8) | get_byte(sealed, 3)
        $$
        """,
        # The runtime role writes sealed fields, so the domain's check runs as it.
        f"GRANT EXECUTE ON FUNCTION ramparts_sealed_version(bytea) TO {APP_ROLE}",
        """
        CREATE DOMAIN sealed_field AS bytea CHECK (
            octet_length(VALUE) >= 32 AND get_byte(VALUE, 0) = 0
            AND ramparts_sealed_version(VALUE) >= 1)
        """,
        "ALTER TABLE totp_credentials ALTER COLUMN sealed_secret TYPE sealed_field",
        "ALTER TABLE webauthn_credentials ALTER COLUMN public_key TYPE sealed_field",
        "ALTER TABLE tenant_identity_providers ALTER COLUMN sealed_client_secret TYPE sealed_field",
        "ALTER TABLE signing_keys ADD CONSTRAINT ck_signing_keys_wrapped "
        "CHECK (substring(sealed_private FROM 1 FOR 8) = 'system:v'::bytea)",
        "ALTER TABLE audit_signing_keys ADD CONSTRAINT ck_audit_signing_keys_wrapped "
        "CHECK (substring(sealed_private FROM 1 FOR 8) = 'system:v'::bytea)",
    ]:
        op.execute(statement)
