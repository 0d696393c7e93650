"""Identity: lockout counters, TOTP, OAuth clients, codes, refresh families, signing keys.

Revision ID: 0003_identity
Revises: 0001_core
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0003_identity"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        "ALTER TABLE users ADD COLUMN failed_logins integer NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN locked_until timestamptz",
        # Login starts before a tenant is set: the runtime role may resolve a slug, nothing more.
        """
        CREATE FUNCTION ramparts_tenant_id(tenant_slug text) RETURNS uuid
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
        AS $$ SELECT id FROM tenants WHERE slug = tenant_slug $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_tenant_id(text) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION ramparts_tenant_id(text) TO {APP_ROLE}",
        # The user's second factor. The secret is sealed (AES-GCM, bound to tenant and user);
        # last_step makes each code single use (RFC 6238 section 5.2).
        """
        CREATE TABLE totp_credentials (
            tenant_id uuid NOT NULL,
            user_id uuid NOT NULL,
            sealed_secret bytea NOT NULL,
            last_step bigint NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_totp_credentials PRIMARY KEY (tenant_id, user_id),
            CONSTRAINT fk_totp_credentials_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("totp_credentials"),
        # WebAuthn / passkey credentials, several per user. sign_count catches clones.
        """
        CREATE TABLE webauthn_credentials (
            tenant_id uuid NOT NULL,
            credential_id bytea NOT NULL CHECK (octet_length(credential_id) BETWEEN 16 AND 1023),
            user_id uuid NOT NULL,
            public_key bytea NOT NULL,
            sign_count bigint NOT NULL DEFAULT 0,
            name text NOT NULL DEFAULT 'passkey',
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            CONSTRAINT pk_webauthn_credentials PRIMARY KEY (tenant_id, credential_id),
            CONSTRAINT fk_webauthn_credentials_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("webauthn_credentials"),
        # Challenges of passkey registrations started from the API, each usable once.
        """
        CREATE TABLE webauthn_challenges (
            tenant_id uuid NOT NULL,
            challenge_hash bytea NOT NULL,
            user_id uuid NOT NULL,
            expires_at timestamptz NOT NULL,
            CONSTRAINT pk_webauthn_challenges PRIMARY KEY (tenant_id, challenge_hash),
            CONSTRAINT fk_webauthn_challenges_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("webauthn_challenges"),
        # Single-use recovery codes: 80 random bits each, so a SHA-256 digest is enough.
        """
        CREATE TABLE recovery_codes (
            tenant_id uuid NOT NULL,
            user_id uuid NOT NULL,
            code_hash bytea NOT NULL,
            used_at timestamptz,
            CONSTRAINT pk_recovery_codes PRIMARY KEY (tenant_id, user_id, code_hash),
            CONSTRAINT fk_recovery_codes_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("recovery_codes"),
        # Registered OAuth clients. First-party public clients are not tenant-specific.
        """
        CREATE TABLE oauth_clients (
            client_id text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{3,64}$'),
            name text NOT NULL,
            redirect_uris text[] NOT NULL CHECK (cardinality(redirect_uris) >= 1),
            post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
            is_public boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        f"GRANT SELECT ON oauth_clients TO {APP_ROLE}",
        """
        CREATE TABLE authorization_codes (
            tenant_id uuid NOT NULL,
            code_hash bytea NOT NULL,
            client_id text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
            user_id uuid NOT NULL,
            redirect_uri text NOT NULL,
            code_challenge text NOT NULL,
            nonce text,
            scope text NOT NULL,
            amr text[] NOT NULL,
            auth_time timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            consumed_at timestamptz,
            CONSTRAINT pk_authorization_codes PRIMARY KEY (tenant_id, code_hash),
            CONSTRAINT fk_authorization_codes_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("authorization_codes", privileges="SELECT, INSERT, UPDATE"),
        """
        CREATE TABLE refresh_families (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL,
            client_id text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
            user_id uuid NOT NULL,
            scope text NOT NULL,
            amr text[] NOT NULL,
            auth_time timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            revoked_reason text,
            CONSTRAINT pk_refresh_families PRIMARY KEY (tenant_id, id),
            CONSTRAINT fk_refresh_families_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("refresh_families", privileges="SELECT, INSERT, UPDATE"),
        """
        CREATE TABLE refresh_tokens (
            tenant_id uuid NOT NULL,
            token_hash bytea NOT NULL,
            family_id uuid NOT NULL,
            issued_at timestamptz NOT NULL DEFAULT now(),
            consumed_at timestamptz,
            CONSTRAINT pk_refresh_tokens PRIMARY KEY (tenant_id, token_hash),
            CONSTRAINT fk_refresh_tokens_family FOREIGN KEY (tenant_id, family_id)
                REFERENCES refresh_families (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("refresh_tokens", privileges="SELECT, INSERT, UPDATE"),
        # Every access token's jti, so revoking a family revokes its live access tokens too.
        """
        CREATE TABLE access_tokens (
            tenant_id uuid NOT NULL,
            jti uuid NOT NULL,
            family_id uuid,
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            CONSTRAINT pk_access_tokens PRIMARY KEY (tenant_id, jti),
            CONSTRAINT fk_access_tokens_family FOREIGN KEY (tenant_id, family_id)
                REFERENCES refresh_families (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("access_tokens", privileges="SELECT, INSERT, UPDATE"),
        # Login flows in progress (authorize -> password -> second factor -> code). The browser
        # holds only a random id; the state lives here, sealed, and moves forward by
        # compare-and-set on `version`, so a replayed request cannot rewind or fork a flow.
        """
        CREATE TABLE login_flows (
            id_hash bytea PRIMARY KEY,
            sealed_state bytea NOT NULL,
            version integer NOT NULL DEFAULT 0,
            expires_at timestamptz NOT NULL
        )
        """,
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON login_flows TO {APP_ROLE}",
        # Per-IP login throttle; keyed by a keyed hash of the address, never the raw IP.
        """
        CREATE TABLE login_throttle (
            key_hash bytea PRIMARY KEY,
            failures integer NOT NULL DEFAULT 0,
            window_start timestamptz NOT NULL DEFAULT now(),
            locked_until timestamptz
        )
        """,
        f"GRANT SELECT, INSERT, UPDATE ON login_throttle TO {APP_ROLE}",
        # Token signing keys. The private half is sealed by the KMS layer; only the owner
        # (`ramparts keys rotate`, `ramparts migrate`) writes here.
        """
        CREATE TABLE signing_keys (
            kid text PRIMARY KEY,
            alg text NOT NULL CHECK (alg IN ('ES256')),
            public_jwk jsonb NOT NULL,
            sealed_private bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            activated_at timestamptz NOT NULL DEFAULT now(),
            retired_at timestamptz
        )
        """,
        f"GRANT SELECT ON signing_keys TO {APP_ROLE}",
    ]:
        op.execute(statement)
