"""Reading the audit trail as the database owner, to assert what was recorded.

Events are queued by the transactions that record them and chained by the sequencer; every
reader here first chains what is queued (`sequence`), which is the trail as it stands once
the sequencer has run.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg

from ramparts.audit.events import SYSTEM_TENANT, Action
from ramparts.db.engine import DatabaseUrls, libpq


def sequence(urls: DatabaseUrls) -> int:
    """Chain every committed queued event of every tenant; how many this chained.

    A chain held by another sequencer (a test server's) is waited for, not skipped."""
    total = 0
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT coalesce(sum(sequenced), 0) FROM audit_sequence(10000)")
            total += int(row.fetchone()[0])  # type: ignore[index]
            if conn.execute("SELECT audit_queue_oldest()").fetchone() == (None,):
                return total
            time.sleep(0.01)


def head(urls: DatabaseUrls, chain: uuid.UUID | None = None) -> int:
    """The last sequence number of `chain` (the system chain when None)."""
    sequence(urls)
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM audit_events WHERE tenant_id = %s",
            (chain or SYSTEM_TENANT,),
        ).fetchone()
    return int(row[0]) if row else 0


def recorded(
    urls: DatabaseUrls,
    chain: uuid.UUID | None,
    action: Action | None = None,
    *,
    after: int = 0,
) -> list[dict[str, Any]]:
    """Events of `chain` after sequence `after`, oldest first, optionally of one action."""
    sequence(urls)
    with psycopg.connect(libpq(urls.owner)) as conn:
        rows = conn.execute(
            "SELECT body FROM audit_events WHERE tenant_id = %s AND seq > %s "
            "AND (%s::text IS NULL OR audit_action(body) = %s) ORDER BY seq",
            (chain or SYSTEM_TENANT, after, action, action),
        ).fetchall()
    return [json.loads(body) for (body,) in rows]
