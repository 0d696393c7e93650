"""HTTP for the tenant's books, read by Finance (nothing here moves money):

- `GET /api/ledger?limit=&before=`: the ledger's entries, newest first, `limit` (1..200,
  default 50) at a time; `next` is the `before` of the following page (null at the end).
  Each posting says its side as the ledger has it: a positive amount debits the account, a
  negative one credits it.
- `GET /api/reconciliation?limit=`: the daily reconciliation runs, newest first (1..100,
  default 30), each with only the drift items that concern the caller's tenant
  (`ramparts.payments.tenant_reconciliation`): `clean` when there are none.

Both are decided by Cedar on the tenant's collection and read under row-level security in the
caller's tenant session.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.apps import AppServices
from ramparts.db.engine import BIGINT_MAX
from ramparts.db.request import request_session
from ramparts.identity.auth import Principal
from ramparts.payments.ledger import Ledger, PostedEntry
from ramparts.payments.tenant_reconciliation import MAX_RUNS, tenant_runs
from ramparts.policy.engine import PolicyAction, Target
from ramparts.quotes.actions import QuoteAction
from ramparts.routes import declares
from ramparts.web.pages import WEB_CLIENT_ID

__all__ = ["MAX_ENTRIES", "build_router"]

#: The most ledger entries one page holds.
MAX_ENTRIES = 200


def entry_json(entry: PostedEntry) -> dict[str, Any]:
    """A ledger entry as the API shows it (amounts in minor units, currencies as booked)."""
    return {
        "id": str(entry.id),
        "seq": entry.seq,
        "kind": entry.kind.value,
        "reference": entry.reference,
        "payment": entry.payment,
        "reverses": str(entry.reverses) if entry.reverses else None,
        "posted_at": entry.posted_at.isoformat(),
        "postings": [
            {
                "account": account,
                "currency": currency,
                "amount": abs(amount),
                "side": "debit" if amount > 0 else "credit",
            }
            for account, currency, amount in entry.postings
        ],
    }


def build_router(services: AppServices) -> APIRouter:
    router = APIRouter(tags=["books"])
    bearer, authorizer = services.bearer, services.authorizer
    Caller = Annotated[Principal, Depends(bearer)]  # noqa: N806 - a type alias
    Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806 - a type alias
    ledger = Ledger()

    async def require(session: AsyncSession, principal: Principal, action: PolicyAction) -> None:
        """Cedar's word on the tenant's collection (the ledger, the runs): 403 otherwise."""
        ctx = await authorizer.context(principal, ui_client=WEB_CLIENT_ID, session=session)
        books = Target(action.entity_type, "*", str(principal.tenant_id), "internal")
        await authorizer.require(principal, action, books, ctx, session=session)

    @router.get("/api/ledger", openapi_extra=declares(QuoteAction.LEDGER_READ))
    async def read_ledger(
        principal: Caller,
        session: Session,
        limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 50,
        before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
    ) -> dict[str, Any]:
        """The tenant's ledger entries, newest first (Finance)."""
        await require(session, principal, QuoteAction.LEDGER_READ)
        entries = await ledger.latest(session, limit=limit + 1, before=before)
        more = len(entries) > limit
        shown = entries[:limit]
        return {
            "items": [entry_json(e) for e in shown],
            "next": shown[-1].seq if more else None,
        }

    @router.get("/api/reconciliation", openapi_extra=declares(QuoteAction.RECONCILIATION_READ))
    async def read_reconciliation(
        principal: Caller,
        session: Session,
        limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 30,
    ) -> dict[str, Any]:
        """The reconciliation runs with the tenant's own drift items, newest first
        (Finance)."""
        await require(session, principal, QuoteAction.RECONCILIATION_READ)
        return {"items": [run.as_json() for run in await tenant_runs(session, limit)]}

    return router
