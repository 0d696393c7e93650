"""One tenant transaction per authenticated request.

The web layer puts a `RequestTransaction` in each HTTP request's ASGI scope; whoever proves
the caller's tenant (the bearer authenticator) opens it, the routes work in it through the
`request_session` dependency, and the web layer ends it before the response starts: committed
when the response is a success, rolled back otherwise. A request that never authenticates
opens nothing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from sqlalchemy.ext.asyncio import AsyncSession

    from ramparts.db.engine import Database, Opening

__all__ = ["REQUEST_TRANSACTION", "RequestTransaction", "request_session"]

#: The scope key of a request's `RequestTransaction`.
REQUEST_TRANSACTION = "ramparts.transaction"


class RequestTransaction:
    """A request's tenant transaction: not yet open, open, or ended (for good)."""

    def __init__(self) -> None:
        self._database: Database | None = None
        self._session: AsyncSession | None = None
        self._ended = False

    @staticmethod
    def of(scope: MutableMapping[str, Any]) -> RequestTransaction | None:
        """The request's transaction, when the app keeps one for it."""
        found = scope.get(REQUEST_TRANSACTION)
        return found if isinstance(found, RequestTransaction) else None

    @property
    def session(self) -> AsyncSession | None:
        """The open transaction's session; None before it opens and after it ends."""
        return self._session

    async def open(
        self, database: Database, tenant_id: uuid.UUID, *, opening: Opening | None = None
    ) -> AsyncSession:
        """Start the transaction in `tenant_id`'s rows (`Database.begin_tenant`)."""
        if self._session is not None or self._ended:
            raise RuntimeError("a request has one transaction, opened once")
        self._session = await database.begin_tenant(tenant_id, opening=opening)
        self._database = database
        return self._session

    async def end(self, *, commit: bool) -> None:
        """Commit or roll back, and give the connection back to the pool. Ending a
        transaction that never opened, or has ended, does nothing."""
        self._ended = True
        session, database = self._session, self._database
        self._session = self._database = None
        if session is not None and database is not None:
            await database.end(session, commit=commit)


async def request_session(request: Request) -> AsyncSession:
    """A FastAPI dependency: the request's tenant transaction, opened when its bearer token
    was verified. A route that depends on it is authenticated (the permission gate runs
    first); asking for it anywhere else is a bug, answered with a 500."""
    transaction = RequestTransaction.of(request.scope)
    session = transaction.session if transaction is not None else None
    if session is None:
        raise RuntimeError("no request transaction: the route is not authenticated")
    return session
