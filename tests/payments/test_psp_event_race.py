"""Storing one PSP event from several processes at the same instant (`ramparts_store_psp_event`).

The PSP retries a delivery it thinks failed, and several API processes may each get a copy at
the same moment: every copy must be answered (stored once, the others duplicates), never
refused with an error that makes the PSP deliver it again.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb

from ramparts.db.engine import DatabaseUrls, libpq
from tests.payments.flows import make_tenant

#: Copies of one event stored at once, and how many events: the race (both copies past the
#: conflict check before either has written its index entries) is narrow, so it is tried often.
COPIES = 4
EVENTS = 100

STORE = (
    "SELECT ramparts_store_psp_event("
    "%s, %s, 'payment_intent.succeeded', 'pi_race', false, %s, %s, %s)"
)


def test_simultaneous_copies_of_one_event_store_it_once_and_fail_none(
    urls: DatabaseUrls,
) -> None:
    tenant = make_tenant(urls)
    connections = [psycopg.connect(libpq(urls.app)) for _ in range(COPIES)]
    start = threading.Barrier(COPIES)
    now = datetime.now(UTC)

    def store(connection: psycopg.Connection[tuple[object, ...]], event_id: str) -> object:
        start.wait()
        try:
            row = connection.execute(
                STORE, (tenant, event_id, now, now, Jsonb({"id": event_id}))
            ).fetchone()
        except psycopg.Error as exc:
            connection.rollback()
            return type(exc).__name__
        connection.commit()
        return row[0] if row else None

    outcomes = []
    try:
        with ThreadPoolExecutor(COPIES) as pool:
            for _ in range(EVENTS):
                event_id = f"evt_race{uuid.uuid4().hex}"
                outcomes.append(sorted(map(str, pool.map(store, connections, [event_id] * COPIES))))
    finally:
        for connection in connections:
            connection.close()
    failed = [outcome for outcome in outcomes if outcome != ["False"] * (COPIES - 1) + ["True"]]
    assert failed == []
