"""The floor under the whole-app benchmark (`bench/api.py --floor`): the bare app plus only the
database work an audited read cannot skip, with no Python work for it beyond sending the
statements.

Per `GET /api/quotes`: the runtime role under row-level security, in one tenant transaction
opened by the statement that sets the tenant and checks the token (`ramparts_begin_request`,
here for a token id that matches nothing: the same index lookup), then, unless
`BENCH_FLOOR_AUDIT=0`, the allow decision queued in that transaction (`audit_enqueue`, with an
event head built once per caller), then the same quote read and JSON as the bare app. No token
verification, Cedar, middleware or dependency: what is left between this and the bare app is
PostgreSQL's work and the round trips that carry it.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from bare_app import caller, served
from fastapi import FastAPI, Request

from ramparts.db.engine import Opening, driver_of
from ramparts.quotes.services import Party, QuoteService
from ramparts.quotes.views import quote_json

DATABASE_URL = "BENCH_FLOOR_DATABASE_URL"  # the runtime role's
AUDIT = "BENCH_FLOOR_AUDIT"


def event_head(tenant: uuid.UUID, user: uuid.UUID) -> str:
    """An allow decision as `AuditLog` queues it: canonical JSON without its last keys."""
    event = {
        "action": "authorization.decided",
        "actor": {
            "auth": ["mfa", "otp", "pwd"],
            "client_id": "ramparts-web",
            "id": str(user),
            "kind": "user",
            "roles": ["buyer"],
            "tenant": str(tenant),
        },
        "decision": "allow",
        "details": {"action": "quote.list", "channel": "ui", "errors": []},
        "policy_ids": ["tenant-wall", "buyer-reads-own"],
        "resource": {"attrs": {"tenant": str(tenant)}, "id": "*", "type": "Quote"},
    }
    return json.dumps(event, separators=(",", ":"), sort_keys=True)[:-1]


def create_app() -> FastAPI:
    app, database = served(DATABASE_URL)
    audited = os.environ.get(AUDIT, "1") == "1"
    heads: dict[tuple[uuid.UUID, uuid.UUID], str] = {}

    @app.get("/api/quotes")
    async def list_quotes(request: Request) -> dict[str, Any]:
        tenant, user = caller(request)
        head = heads.get((tenant, user))
        if head is None:
            head = heads[tenant, user] = event_head(tenant, user)
        opening = Opening("ramparts_begin_request", (uuid.uuid4(), None))
        async with database.tenant_session(tenant, opening=opening) as session:
            if audited:
                enqueue = "SELECT * FROM audit_enqueue(%b::text[])"
                await (await driver_of(session)).execute(enqueue, ([head],))
            quotes = QuoteService(session)
            found = await quotes.listing(tenant, party=Party(user, buyer=True, seller=False))
            return {"items": [quote_json(q) for q in found]}

    return app
