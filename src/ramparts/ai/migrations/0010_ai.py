"""The AI gateway's state: conversations (memory per tenant, under RLS), approval requests,
data loss prevention rules and the kill-switch.

Revision ID: 0010_ai
Revises: 0009_sealed_fields
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0010_ai"
down_revision = "0009_sealed_fields"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # The PII tokens of a conversation (token -> value) are sealed under the tenant's key.
        """
        CREATE TABLE ai_conversations (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            id uuid NOT NULL,
            user_id uuid NOT NULL,
            sealed_tokens sealed_field,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_ai_conversations PRIMARY KEY (tenant_id, id),
            CONSTRAINT fk_ai_conversations_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("ai_conversations", privileges="SELECT, INSERT, UPDATE"),
        # What was said, masked, each piece with where it came from and whether it is trusted.
        """
        CREATE TABLE ai_messages (
            tenant_id uuid NOT NULL,
            conversation_id uuid NOT NULL,
            seq integer NOT NULL CHECK (seq >= 1),
            role text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
            trust text NOT NULL CHECK (trust IN ('trusted', 'untrusted')),
            source text NOT NULL CHECK (char_length(source) <= 200),
            content text NOT NULL CHECK (char_length(content) <= 200000),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_ai_messages PRIMARY KEY (tenant_id, conversation_id, seq),
            CONSTRAINT fk_ai_messages_conversation FOREIGN KEY (tenant_id, conversation_id)
                REFERENCES ai_conversations (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("ai_messages", privileges="SELECT, INSERT"),
        # A call the gateway would not run on the model's word: the exact (masked) arguments,
        # why, and the provenance trail; decided once by a different person.
        """
        CREATE TABLE ai_approvals (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL,
            conversation_id uuid NOT NULL,
            tool text NOT NULL,
            arguments jsonb NOT NULL,
            reason text NOT NULL,
            provenance jsonb NOT NULL,
            requested_by uuid NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'executed', 'rejected', 'failed')),
            expires_at timestamptz NOT NULL,
            decided_by uuid,
            decided_at timestamptz,
            result jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_ai_approvals PRIMARY KEY (tenant_id, id),
            CONSTRAINT fk_ai_approvals_conversation FOREIGN KEY (tenant_id, conversation_id)
                REFERENCES ai_conversations (tenant_id, id) ON DELETE CASCADE,
            CONSTRAINT ck_ai_approvals_four_eyes CHECK (decided_by IS DISTINCT FROM requested_by)
        )
        """,
        *tenant_table_sql("ai_approvals", privileges="SELECT, INSERT, UPDATE"),
        # Data loss prevention: kinds of personal data a tenant forbids in anything its
        # assistant sends to a model (masking would otherwise let them through as tokens).
        """
        CREATE TABLE ai_dlp_rules (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            kind text NOT NULL CHECK (kind IN ('CARD', 'IBAN', 'SSN', 'EMAIL', 'PHONE')),
            CONSTRAINT pk_ai_dlp_rules PRIMARY KEY (tenant_id, kind)
        )
        """,
        *tenant_table_sql("ai_dlp_rules", privileges="SELECT, INSERT, DELETE"),
        # Kill-switch: global, per tenant, per tool (of one tenant or of all). Not a tenant
        # table (a switch may cover every tenant), so the runtime role has no privilege on it:
        # it asks ramparts_ai_stopped and sets its own tenant's switches via ramparts_ai_switch.
        """
        CREATE TABLE ai_killswitch (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            scope_tenant uuid REFERENCES tenants (id) ON DELETE CASCADE,
            tool text NOT NULL DEFAULT '' CHECK (tool ~ '^[a-z0-9_]{0,64}$'),
            -- An operator's switch and a tenant admin's are separate rows: an admin can never
            -- lift the operator's stop, only their own.
            origin text NOT NULL CHECK (origin IN ('operator', 'tenant')),
            engaged boolean NOT NULL,
            reason text NOT NULL DEFAULT '' CHECK (char_length(reason) <= 500),
            set_by text NOT NULL,
            set_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE UNIQUE INDEX ux_ai_killswitch_scope ON ai_killswitch "
        "(COALESCE(scope_tenant, '00000000-0000-0000-0000-000000000000'::uuid), tool, origin)",
        # The tools stopped for the caller's tenant ('' = the whole assistant): read for every
        # request and model turn, so a switch takes effect for every process at once.
        """
        CREATE FUNCTION ramparts_ai_stopped_tools() RETURNS text[]
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            SELECT coalesce(array_agg(DISTINCT tool), '{}') FROM ai_killswitch
            WHERE engaged
              AND (scope_tenant IS NULL
                   OR scope_tenant = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        $$
        """,
        """
        CREATE FUNCTION ramparts_ai_switch(tool_name text, engage boolean, why text, actor text)
        RETURNS void
        LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            INSERT INTO ai_killswitch (scope_tenant, tool, origin, engaged, reason, set_by)
            SELECT tenant, tool_name, 'tenant', engage, why, actor
            FROM (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid AS tenant) t
            WHERE tenant IS NOT NULL  -- the runtime role never sets a global switch
            ON CONFLICT (COALESCE(scope_tenant, '00000000-0000-0000-0000-000000000000'::uuid),
                         tool, origin)
            DO UPDATE SET engaged = excluded.engaged, reason = excluded.reason,
                          set_by = excluded.set_by, set_at = now()
        $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_ai_stopped_tools() FROM PUBLIC",
        "REVOKE ALL ON FUNCTION ramparts_ai_switch(text, boolean, text, text) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION ramparts_ai_stopped_tools() TO {APP_ROLE}",
        f"GRANT EXECUTE ON FUNCTION ramparts_ai_switch(text, boolean, text, text) TO {APP_ROLE}",
    ]:
        op.execute(statement)
