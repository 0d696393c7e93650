"""One statement opens an authenticated request's transaction: its tenant, and its token.

Revision ID: 0017_request_path
Revises: 0016_audit_sequencer
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0017_request_path"
down_revision = "0016_audit_sequencer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sets the transaction's tenant (as `set_config(..., true)` does in every tenant
    # session), then answers whether the access token is still live: not revoked itself or
    # with its refresh family and, for a service's token, its client not revoked. NULL for a
    # token never issued. An invoker's function: the check reads through row-level security
    # with the tenant it has just set, as the runtime role, exactly like the query it
    # replaces; it saves the request one round trip.
    op.execute(
        """
        CREATE FUNCTION ramparts_begin_request(tenant uuid, token uuid, service_client text)
        RETURNS boolean
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', tenant::text, true);
            RETURN (
                SELECT a.revoked_at IS NULL AND (service_client IS NULL OR EXISTS (
                    SELECT 1 FROM service_clients c WHERE c.tenant_id = a.tenant_id
                        AND c.client_id = service_client AND c.revoked_at IS NULL))
                FROM access_tokens a WHERE a.tenant_id = tenant AND a.jti = token
            );
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION ramparts_begin_request(uuid, uuid, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION ramparts_begin_request(uuid, uuid, text) TO {APP_ROLE}")
