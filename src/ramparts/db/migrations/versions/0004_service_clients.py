"""Service clients (ID-3): private_key_jwt or mTLS, bound to the audiences they may request.

Revision ID: 0004_service_clients
Revises: 0003_identity
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "0004_service_clients"
down_revision = "0003_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # client_id is "svc.<tenant hex>.<random>": the prefix routes to the tenant's session.
        """
        CREATE TABLE service_clients (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            client_id text NOT NULL CHECK (client_id ~ '^svc\\.[0-9a-f]{32}\\.[A-Za-z0-9_-]{16,}$'),
            name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
            auth_method text NOT NULL
                CHECK (auth_method IN ('private_key_jwt', 'tls_client_auth')),
            jwks jsonb,
            certificate_thumbprint text,
            resources text[] NOT NULL CHECK (cardinality(resources) >= 1),
            roles text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            CONSTRAINT pk_service_clients PRIMARY KEY (tenant_id, client_id),
            CONSTRAINT ck_service_clients_credential CHECK (
                (auth_method = 'private_key_jwt' AND jwks IS NOT NULL)
                OR (auth_method = 'tls_client_auth' AND certificate_thumbprint IS NOT NULL))
        )
        """,
        *tenant_table_sql("service_clients", privileges="SELECT"),
        # RFC 7523 section 3: a client assertion's jti is accepted once.
        """
        CREATE TABLE client_assertions (
            tenant_id uuid NOT NULL,
            client_id text NOT NULL,
            jti text NOT NULL CHECK (char_length(jti) BETWEEN 8 AND 200),
            expires_at timestamptz NOT NULL,
            CONSTRAINT pk_client_assertions PRIMARY KEY (tenant_id, client_id, jti),
            CONSTRAINT fk_client_assertions_client FOREIGN KEY (tenant_id, client_id)
                REFERENCES service_clients (tenant_id, client_id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("client_assertions", privileges="SELECT, INSERT"),
    ]:
        op.execute(statement)
