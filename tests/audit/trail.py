"""Reading the audit trail as the database owner, to assert what was recorded."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from ramparts.audit.events import SYSTEM_TENANT, Action
from ramparts.db.engine import DatabaseUrls, libpq


def head(urls: DatabaseUrls, chain: uuid.UUID | None = None) -> int:
    """The last sequence number of `chain` (the system chain when None)."""
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
    with psycopg.connect(libpq(urls.owner)) as conn:
        rows = conn.execute(
            "SELECT body FROM audit_events WHERE tenant_id = %s AND seq > %s "
            "AND (%s::text IS NULL OR audit_action(body) = %s) ORDER BY seq",
            (chain or SYSTEM_TENANT, after, action, action),
        ).fetchall()
    return [json.loads(body) for (body,) in rows]
