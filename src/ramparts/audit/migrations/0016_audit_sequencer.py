"""The audit sequencer: events are queued in their transaction, then chained in batches.

A request no longer takes its tenant chain's lock: `audit_enqueue` adds its events to
`audit_queue` (no lock, atomic with what they describe), and `audit_sequence`, called by a
sequencer in every server process, folds queued events into each tenant's hash chain in short
transactions, building every body and hash exactly as `audit_append` did, so verification and
external verifiers are unchanged. This is the pattern of transparency logs such as Trillian:
queue leaves, integrate them into the log in batches.

Revision ID: 0016_audit_sequencer
Revises: 0015_ai_masked_calls
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0016_audit_sequencer"
down_revision = "0015_ai_masked_calls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # Events recorded but not yet in their chain. `head` is the canonical event without
        # its last three keys, `tail` the last two (`,"tenant":"…","time":"…"}`, written
        # when the event is queued, so chaining only has to put `,"seq":N` between them), and
        # `queued_at` the event's time. No tenant_id column and no
        # row-level security on purpose, like audit_chains: the sequencer lists the queue
        # across tenants. The runtime role has no privilege at all on it; it writes through
        # audit_enqueue alone, into its own tenant's queue. The head is bounded so that the
        # body the sequencer builds from it always fits audit_events: a queued event that
        # could not be chained would stop its tenant's chain.
        """
        CREATE TABLE audit_queue (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant uuid NOT NULL,
            head text NOT NULL CHECK (octet_length(head) <= 262144 - 128),
            tail text NOT NULL CHECK (octet_length(tail) <= 100),
            queued_at timestamptz NOT NULL
        )
        """,
        "CREATE INDEX ix_audit_queue_tenant ON audit_queue (tenant, id)",
        f"REVOKE ALL ON audit_queue FROM PUBLIC, {APP_ROLE}",
        # Events leave the queue only by being chained (a DELETE in audit_sequence).
        """
        CREATE TRIGGER audit_queue_no_update BEFORE UPDATE ON audit_queue
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()
        """,
        """
        CREATE TRIGGER audit_queue_no_truncate BEFORE TRUNCATE ON audit_queue
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()
        """,
        # Indexed for every event chained, so its cost bounds the sequencer: an SQL function
        # whose body is not immutable is never inlined and runs through the SQL function
        # executor per row; PL/pgSQL evaluates the same expression at a fraction of the cost.
        # Same input, same result: the index built on it stays valid.
        """
        CREATE OR REPLACE FUNCTION audit_time(body text) RETURNS timestamptz
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ BEGIN RETURN left(right(body, 29), 27)::timestamptz; END $$
        """,
        # The chain's advisory lock key, in one place for audit_lock and audit_sequence.
        """
        CREATE FUNCTION audit_lock_key(chain uuid) RETURNS bigint
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, public
        AS $$ SELECT ('x' || left(replace(chain::text, '-', ''), 16))::bit(64)::bigint $$
        """,
        f"GRANT EXECUTE ON FUNCTION audit_lock_key(uuid) TO {APP_ROLE}",
        """
        CREATE OR REPLACE FUNCTION audit_lock(chain uuid) RETURNS void
        LANGUAGE sql VOLATILE SET search_path = pg_catalog, public
        AS $$ SELECT pg_advisory_xact_lock(audit_lock_key(chain)) $$
        """,
        # Queues events on the chain of the caller's tenant (app.tenant_id, never an
        # argument) and returns their queue ids, in order. It checks each head as
        # audit_append did, and that it fits the trail's indexes, so the sequencer only ever
        # meets events it can chain. No lock: writers of one tenant never wait for each other.
        """
        CREATE FUNCTION audit_enqueue(heads text[])
        RETURNS TABLE (chain uuid, queue_id bigint)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        BEGIN
            chain := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
            IF chain IS NULL THEN
                RAISE EXCEPTION 'audit events are written inside a tenant session';
            END IF;
            -- Parsing proves each head is one JSON object whose keys all sort before "seq";
            -- the action and the actor's id must also fit the trail's search indexes, so
            -- that every queued event can be chained (one that could not would stop its
            -- tenant's chain).
            IF EXISTS (
                SELECT FROM unnest(heads) AS h
                WHERE h IS NULL OR left(h, 11) <> '{"action":"'
                    OR position('","actor":' IN h) NOT BETWEEN 13 AND 12 + 200
                    OR (h || '}')::jsonb ?| ARRAY['seq', 'tenant', 'time']
                    OR octet_length(((h || '}')::jsonb -> 'actor') ->> 'id') > 1024
            ) THEN
                RAISE EXCEPTION 'audit_enqueue takes canonical events without their last keys';
            END IF;
            -- OFFSET 0 keeps the clock read once per event, for both its tail and queued_at.
            RETURN QUERY
                INSERT INTO audit_queue (tenant, head, tail, queued_at)
                SELECT chain, e.h,
                    ',"tenant":"' || chain || '","time":"'
                        || to_char(e.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                        || '"}',
                    e.t
                FROM (
                    SELECT u.h, u.n, clock_timestamp() AS t
                    FROM unnest(heads) WITH ORDINALITY AS u (h, n) OFFSET 0
                ) AS e
                ORDER BY e.n
                RETURNING audit_queue.tenant, audit_queue.id;
        END $$
        """,
        "REVOKE ALL ON FUNCTION audit_enqueue(text[]) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_enqueue(text[]) TO {APP_ROLE}",
        # Chains up to `max_events` of `chain`'s queued events, oldest first, and returns how
        # many; the caller holds the chain's lock. The body and hash are built exactly as
        # audit_append built them: head + `,"seq":N` + tail, the tail being
        # `,"tenant":"…","time":"<queued_at, UTC>"}`; hash = SHA-256(body || prev_hash).
        # Sequence numbers follow the order events are chained in, which for any one writer
        # is the order it committed them. Internal: the runtime role reaches it only through
        # the two functions below.
        #
        # audit_events forces row-level security, owner included, so the chain is written as
        # its tenant; those functions' SET clause puts the caller's setting back on return.
        """
        CREATE FUNCTION audit_chain_queued(chain uuid, max_events integer) RETURNS integer
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
        DECLARE
            head_seq bigint;
            prev bytea;
            heads text[];
            tails text[];
            body text;
            bodies text[];
            prevs bytea[] := '{}';
            digests bytea[] := '{}';
        BEGIN
            -- = ANY(ARRAY(...)): the claimed ids first, then one index probe each, never a
            -- scan of the whole queue.
            WITH claimed AS (
                DELETE FROM audit_queue q WHERE q.id = ANY (ARRAY(
                    SELECT c.id FROM audit_queue c WHERE c.tenant = chain
                    ORDER BY c.id LIMIT max_events FOR UPDATE SKIP LOCKED
                ))
                RETURNING q.id, q.head, q.tail
            )
            SELECT array_agg(c.head ORDER BY c.id), array_agg(c.tail ORDER BY c.id)
                INTO heads, tails FROM claimed c;
            IF heads IS NULL THEN
                RETURN 0;
            END IF;
            PERFORM set_config('app.tenant_id', chain::text, true);
            SELECT e.seq, e.hash INTO head_seq, prev FROM audit_events e
                WHERE e.tenant_id = chain ORDER BY e.seq DESC LIMIT 1;
            IF head_seq IS NULL THEN
                INSERT INTO audit_chains (tenant) VALUES (chain) ON CONFLICT DO NOTHING;
                head_seq := 0;
                prev := decode(repeat('00', 32), 'hex');
            END IF;
            bodies := ARRAY(
                SELECT h || ',"seq":' || (head_seq + n) || t
                FROM unnest(heads, tails) WITH ORDINALITY AS u (h, t, n) ORDER BY n
            );
            -- The one step that cannot be set-based: each hash covers the one before it.
            FOREACH body IN ARRAY bodies LOOP
                prevs := prevs || prev;
                prev := sha256(convert_to(body, 'UTF8') || prev);
                digests := digests || prev;
            END LOOP;
            INSERT INTO audit_events (tenant_id, seq, body, prev_hash, hash)
                SELECT chain, head_seq + n, b, p, d
                FROM unnest(bodies, prevs, digests) WITH ORDINALITY AS u (b, p, d, n);
            RETURN cardinality(bodies);
        END $$
        """,
        "REVOKE ALL ON FUNCTION audit_chain_queued(uuid, integer) FROM PUBLIC",
        # The sequencer's pass: up to `max_events` in all, the chains whose oldest event has
        # waited longest first (none starves), and how many per chain. A chain another
        # transaction holds (another sequencer, the checkpoint signer, an admin's search) is
        # skipped, never waited for, so sequencers in many processes share the work; and the
        # bound keeps each chain's lock, held to the end of the pass, brief. A chain that
        # cannot be chained (`audit_enqueue` admits no such event; this is the second wall)
        # is left queued, with a warning, and does not stop the others: its lag shows in
        # `ramparts audit status`.
        """
        CREATE FUNCTION audit_sequence(max_events integer)
        RETURNS TABLE (chain uuid, sequenced integer)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, public SET app.tenant_id = '' AS $$
        DECLARE
            total integer := 0;
        BEGIN
            IF max_events IS NULL OR max_events < 1 THEN
                RAISE EXCEPTION 'audit_sequence takes a positive batch size';
            END IF;
            FOR chain IN
                SELECT q.tenant FROM audit_queue q GROUP BY q.tenant ORDER BY min(q.id)
            LOOP
                EXIT WHEN total >= max_events;
                CONTINUE WHEN NOT pg_try_advisory_xact_lock(audit_lock_key(chain));
                BEGIN
                    sequenced := audit_chain_queued(chain, max_events - total);
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'audit chain % cannot be sequenced: %', chain, SQLERRM;
                    CONTINUE;
                END;
                total := total + sequenced;
                IF sequenced > 0 THEN
                    RETURN NEXT;
                END IF;
            END LOOP;
        END $$
        """,
        "REVOKE ALL ON FUNCTION audit_sequence(integer) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_sequence(integer) TO {APP_ROLE}",
        # The caller's own chain, now, waiting for its lock: a search chains what its tenant
        # just recorded before it reads, and holds the chain until it commits.
        """
        CREATE FUNCTION audit_sequence_own(max_events integer) RETURNS integer
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, public AS $$
        DECLARE
            chain uuid := NULLIF(current_setting('app.tenant_id', true), '')::uuid;
        BEGIN
            IF chain IS NULL THEN
                RAISE EXCEPTION 'audit events are read inside a tenant session';
            END IF;
            PERFORM audit_lock(chain);
            RETURN audit_chain_queued(chain, max_events);
        END $$
        """,
        "REVOKE ALL ON FUNCTION audit_sequence_own(integer) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_sequence_own(integer) TO {APP_ROLE}",
        # When the oldest event still queued was recorded (NULL when none is), so every
        # server's sequencer can tell when the lag passes its bound. No tenant is named.
        """
        CREATE FUNCTION audit_queue_oldest() RETURNS timestamptz
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
        AS $$ SELECT queued_at FROM audit_queue ORDER BY id LIMIT 1 $$
        """,
        "REVOKE ALL ON FUNCTION audit_queue_oldest() FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION audit_queue_oldest() TO {APP_ROLE}",
        # Nothing writes to a chain synchronously under its lock any more.
        "DROP FUNCTION audit_append(text[])",
    ]:
        op.execute(statement)
