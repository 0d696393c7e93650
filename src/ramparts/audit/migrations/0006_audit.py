"""The audit trail: hash-chained events per tenant, signed checkpoints, append-only.

Revision ID: 0006_audit
Revises: 0005_federation
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0006_audit"
down_revision = "0005_federation"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_chains", "audit_events", "audit_checkpoints", "audit_signing_keys")


def upgrade() -> None:
    for statement in [
        # Raised for every role, the owner included; only a superuser who switches triggers
        # off (session_replication_role) or an owner who drops them gets past, and then
        # `ramparts audit verify` finds what they changed.
        """
        CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        # Every chain ever started, so verification finds a chain even when all of its events
        # are gone. No tenant column on purpose: the owner lists it across tenants.
        """
        CREATE TABLE audit_chains (
            tenant uuid PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        # The event as hashed: canonical JSON (sorted keys, no spaces, ASCII), exactly the
        # bytes that went into `hash = SHA-256(body || prev_hash)`. There is nothing else to
        # trust: searches read the body through the functions and indexes below, so no
        # column can say something the verified body does not.
        """
        CREATE TABLE audit_events (
            tenant_id uuid NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 1),
            body text NOT NULL CHECK (octet_length(body) <= 262144),
            prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
            hash bytea NOT NULL CHECK (octet_length(hash) = 32),
            CONSTRAINT pk_audit_events PRIMARY KEY (tenant_id, seq)
        )
        """,
        # A body begins `{"action":"<tag>","actor":` and ends `"time":"<27 chars>Z"}`
        # (sorted keys; tags are plain ASCII), so both read without parsing JSON. Immutable
        # because the time is ISO 8601 in UTC with a `Z`: no DateStyle or TimeZone changes it.
        """
        CREATE FUNCTION audit_time(body text) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT left(right(body, 29), 27)::timestamptz $$
        """,
        """
        CREATE FUNCTION audit_action(body text) RETURNS text
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT substring(body FROM 12 FOR position('","actor":' IN body) - 12) $$
        """,
        f"GRANT EXECUTE ON FUNCTION audit_time(text), audit_action(text) TO {APP_ROLE}",
        "CREATE INDEX ix_audit_events_time ON audit_events (tenant_id, audit_time(body))",
        "CREATE INDEX ix_audit_events_action ON audit_events (tenant_id, audit_action(body), seq)",
        """
        CREATE INDEX ix_audit_events_actor
        ON audit_events (tenant_id, ((body::jsonb -> 'actor') ->> 'id'), seq)
        """,
        # Read only: events are written through audit_append alone, so every stored body,
        # sequence and hash is one the database built itself.
        *tenant_table_sql("audit_events", privileges="SELECT"),
        # Ed25519 keys that sign checkpoints; the private half sealed like token signing keys.
        """
        CREATE TABLE audit_signing_keys (
            key_id text PRIMARY KEY,
            public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
            sealed_private bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        f"GRANT SELECT ON audit_signing_keys TO {APP_ROLE}",
        """
        CREATE TABLE audit_checkpoints (
            tenant_id uuid NOT NULL,
            seq bigint NOT NULL CHECK (seq >= 1),
            head_hash bytea NOT NULL CHECK (octet_length(head_hash) = 32),
            signed_at timestamptz NOT NULL,
            key_id text NOT NULL REFERENCES audit_signing_keys (key_id),
            signature bytea NOT NULL CHECK (octet_length(signature) = 64),
            CONSTRAINT pk_audit_checkpoints PRIMARY KEY (tenant_id, seq)
        )
        """,
        *tenant_table_sql("audit_checkpoints", privileges="SELECT, INSERT"),
        # One lock per chain, held to the end of the transaction, never a global one. Its key
        # is the tenant's first 64 bits; two tenants sharing it would only wait for each
        # other, never mix chains.
        """
        CREATE FUNCTION audit_lock(chain uuid) RETURNS void
        LANGUAGE sql VOLATILE SET search_path = pg_catalog, public
        AS $$ SELECT pg_advisory_xact_lock(('x' || left(replace(chain::text, '-', ''), 16))
            ::bit(64)::bigint) $$
        """,
        f"GRANT EXECUTE ON FUNCTION audit_lock(uuid) TO {APP_ROLE}",
        # Appends events to the chain of the caller's tenant and returns their places. The
        # caller gives the canonical JSON of each event up to its last three keys; the database
        # adds `"seq"`, `"tenant"` and `"time"` (which sort last) under the chain's lock, so
        # the sequence is gap-free and the time is the database's UTC clock, and hashes it.
        # SECURITY DEFINER because the runtime role may not INSERT into audit_events itself;
        # the chain is always the caller's own tenant (app.tenant_id), never an argument.
        # In READ COMMITTED each statement of a volatile function takes a new snapshot, so
        # the head is read after the lock is held.
        """
        CREATE FUNCTION audit_append(heads text[])
        RETURNS TABLE (chain uuid, event_seq bigint, digest bytea)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            head text;
            prev bytea;
            body text;
            parts jsonb;
        BEGIN
            chain := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
            IF chain IS NULL THEN
                RAISE EXCEPTION 'audit events are written inside a tenant session';
            END IF;
            PERFORM audit_lock(chain);
            SELECT e.seq, e.hash INTO event_seq, prev FROM audit_events e
                WHERE e.tenant_id = chain ORDER BY e.seq DESC LIMIT 1;
            IF event_seq IS NULL THEN
                INSERT INTO audit_chains (tenant) VALUES (chain) ON CONFLICT DO NOTHING;
                event_seq := 0;
                prev := decode(repeat('00', 32), 'hex');
            END IF;
            FOREACH head IN ARRAY heads LOOP
                -- Parsing proves the head is one JSON object whose keys all sort before "seq".
                parts := (head || '}')::jsonb;
                IF left(head, 11) <> '{"action":"' OR parts ?| ARRAY['seq', 'tenant', 'time']
                THEN
                    RAISE EXCEPTION 'audit_append takes canonical events without their last keys';
                END IF;
                event_seq := event_seq + 1;
                body := head || ',"seq":' || event_seq || ',"tenant":"' || chain || '","time":"'
                    || to_char(clock_timestamp() AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                    || '"}';
                digest := sha256(convert_to(body, 'UTF8') || prev);
                INSERT INTO audit_events (tenant_id, seq, body, prev_hash, hash)
                    VALUES (chain, event_seq, body, prev, digest);
                prev := digest;
                RETURN NEXT;
            END LOOP;
        END $$
        """,
        "REVOKE ALL ON FUNCTION audit_append(text[]) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_append(text[]) TO {APP_ROLE}",
        # Locks the caller's chain and returns its head, for signing a checkpoint.
        """
        CREATE FUNCTION audit_lock_chain(OUT chain uuid, OUT head_seq bigint, OUT head_hash bytea)
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
        BEGIN
            chain := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
            PERFORM audit_lock(chain);
            SELECT e.seq, e.hash INTO head_seq, head_hash FROM audit_events e
                WHERE e.tenant_id = chain ORDER BY e.seq DESC LIMIT 1;
        END $$
        """,
        f"GRANT EXECUTE ON FUNCTION audit_lock_chain() TO {APP_ROLE}",
        # The periodic checkpointer needs to know which chains exist, not what is in them.
        """
        CREATE FUNCTION audit_chain_tenants() RETURNS SETOF uuid
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
        AS $$ SELECT tenant FROM audit_chains ORDER BY tenant $$
        """,
        "REVOKE ALL ON FUNCTION audit_chain_tenants() FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_chain_tenants() TO {APP_ROLE}",
    ]:
        op.execute(statement)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()"
        )
