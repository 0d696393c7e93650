"""Federated login: a tenant's own OIDC identity provider, and links to its users.

Revision ID: 0005_federation
Revises: 0004_service_clients
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "0005_federation"
down_revision = "0004_service_clients"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # One IdP per tenant. The client secret, when the IdP needs one, is sealed.
        # mfa_amr / mfa_acr: the IdP's amr or acr values that prove a second factor; anything
        # else means the user must still pass our own second factor.
        """
        CREATE TABLE tenant_identity_providers (
            tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
            issuer text NOT NULL CHECK (issuer ~ '^https?://'),
            client_id text NOT NULL CHECK (char_length(client_id) BETWEEN 1 AND 200),
            sealed_client_secret bytea,
            mfa_amr text[] NOT NULL DEFAULT '{mfa,otp,hwk,swk}',
            mfa_acr text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        *tenant_table_sql("tenant_identity_providers", privileges="SELECT"),
        """
        CREATE TABLE federated_identities (
            tenant_id uuid NOT NULL,
            issuer text NOT NULL,
            subject text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
            user_id uuid NOT NULL,
            CONSTRAINT pk_federated_identities PRIMARY KEY (tenant_id, issuer, subject),
            CONSTRAINT fk_federated_identities_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("federated_identities", privileges="SELECT"),
    ]:
        op.execute(statement)
