"""Engines and sessions.

`Database.tenant_session(tenant_id)` is the only way application code reaches tenant rows: it
opens a transaction and sets `app.tenant_id` with `set_config(..., true)`, which PostgreSQL
scopes to that transaction, so a pooled connection never carries a tenant into the next use.

Pooled connections are not pinged before use (a round trip on every checkout): they are
recycled after `POOL_RECYCLE_SECONDS`, and a transaction whose first statement finds its
connection dead is started again, once, on a fresh one.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ramparts.config import APP_ROLE, Settings
from ramparts.db.embedded import embedded_postgres

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

__all__ = [
    "BIGINT_MAX",
    "Database",
    "DatabaseUrls",
    "Opening",
    "OwnerRequiredError",
    "TransactionAbortedError",
    "UnsafeRuntimeRoleError",
    "driver_of",
    "libpq",
    "open_database",
    "opened",
]

#: The largest PostgreSQL `bigint` (sequences, ledger and audit ids): input beyond it is
#: refused at the edge of a route (a 422), never sent to SQL (where it fails as a 500).
BIGINT_MAX = 2**63 - 1

DRIVER = "postgresql+psycopg"
#: Older pooled connections are closed and replaced, before a server or proxy idle timeout
#: drops them.
POOL_RECYCLE_SECONDS = 300

SET_TENANT = "SELECT set_config('app.tenant_id', %s, true)"
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Where a session keeps the answer of its opening statement (see `opened`).
OPENED = "ramparts.opened"


@dataclass(frozen=True)
class Opening:
    """A SQL function that opens a tenant session in place of `set_config`: it takes the
    tenant, then `arguments`, sets `app.tenant_id` for the transaction, and returns one
    value."""

    function: str
    arguments: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not _SQL_NAME.fullmatch(self.function):  # it is written into the statement
            raise ValueError(f"not a SQL function name: {self.function!r}")


def opened(session: AsyncSession) -> Any:
    """What the session's opening statement returned."""
    return session.info.get(OPENED)


async def driver_of(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under the session, inside the session's transaction: for the
    few statements on every request's path, where the ORM's machinery costs more than the
    round trip."""
    return await _psycopg(await session.connection())


async def _psycopg(connection: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    driver = (await connection.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):  # pragma: no cover - one driver
        raise TypeError("Ramparts needs the psycopg driver")
    return driver


class TransactionAbortedError(Exception):
    """COMMIT found the transaction aborted by a failed statement: it rolled back instead."""


class _DeadConnectionError(Exception):
    """The pooled connection was closed by the server before this transaction began."""


RUNTIME_ROLE_CHECK = """
SELECT current_user, r.rolsuper, r.rolbypassrls,
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
           OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.proowner = r.oid)
FROM pg_roles r WHERE r.rolname = current_user
"""


class UnsafeRuntimeRoleError(Exception):
    """The runtime connection has more power than `ramparts_app` may have; refuse to serve."""


class OwnerRequiredError(Exception):
    """The command needs the owner's URL (RAMPARTS_DATABASE_URL) and it is not set."""


@dataclass(frozen=True)
class DatabaseUrls:
    """Where to connect: `owner` runs migrations and provisioning, `app` serves requests.

    A production server is given only the app URL, so `owner` may be absent.
    """

    app: URL
    owner_url: URL | None = None

    @property
    def owner(self) -> URL:
        if self.owner_url is None:
            raise OwnerRequiredError("this command needs RAMPARTS_DATABASE_URL (the owner URL)")
        return self.owner_url


def libpq(url: URL) -> str:
    """The URL for psycopg.connect (no SQLAlchemy driver suffix), password included."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _with_driver(url: URL) -> URL:
    return url.set(drivername=DRIVER)


def derive_app_url(owner: URL) -> URL:
    """The runtime role's URL: same server and database, logging in as `ramparts_app`."""
    return _with_driver(owner).set(username=APP_ROLE, password=None)


@contextmanager
def open_database(settings: Settings) -> Iterator[DatabaseUrls]:
    """Resolve the URLs, starting the embedded server for the duration when none is set."""
    if settings.embedded_database:
        with embedded_postgres(settings.home) as embedded:
            yield DatabaseUrls(owner_url=_with_driver(embedded), app=derive_app_url(embedded))
        return
    owner: URL | None = None
    if settings.database_url is not None:
        owner = _with_driver(make_url(settings.database_url.get_secret_value()))
    if settings.app_database_url is not None:
        app = _with_driver(make_url(settings.app_database_url.get_secret_value()))
    elif owner is not None:
        app = derive_app_url(owner)
    else:  # unreachable: not embedded means one of the two URLs is set
        raise OwnerRequiredError("set RAMPARTS_DATABASE_URL or RAMPARTS_APP_DATABASE_URL")
    yield DatabaseUrls(owner_url=owner, app=app)


class Database:
    """An async engine plus the two ways to open a transaction on it."""

    def __init__(
        self,
        url: URL,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        transaction_pooler: bool = False,
    ) -> None:
        self.transaction_pooler = transaction_pooler
        #: psycopg's connection options, for every connection to this database (the engine's
        #: and any opened beside it). Behind a transaction pooler (PgBouncer) no statement is
        #: prepared on the server: psycopg prepares a query it has run five times, under a
        #: name of its own connection, and the pooler hands that server connection to other
        #: clients, whose psycopg then finds the name taken ("_pg3_0 already exists") or its
        #: own statement gone.
        self.driver_options: dict[str, Any] = (
            {"prepare_threshold": None} if transaction_pooler else {}
        )
        # hide_parameters: statement parameters (password hashes, tokens, PII) never appear
        # in exception messages, which end up in logs.
        self.engine = create_async_engine(
            _with_driver(url),
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=POOL_RECYCLE_SECONDS,
            hide_parameters=True,
            connect_args=self.driver_options,
        )
        # close_resets_only=False: a session that has ended cannot quietly start another
        # transaction (with no tenant set) if someone keeps using it, e.g. a streaming
        # response's body after the request's transaction ended.
        self._sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, close_resets_only=False
        )

    @asynccontextmanager
    async def tenant_session(
        self, tenant_id: uuid.UUID, *, opening: Opening | None = None
    ) -> AsyncIterator[AsyncSession]:
        """A transaction that sees exactly one tenant's rows (row-level security): committed
        when the block ends normally, rolled back when it raises.

        With `opening`, its SQL function sets the tenant instead of `set_config`, so the
        first round trip does a second job too; its answer is `opened(session)`.
        """
        session = await self.begin_tenant(tenant_id, opening=opening)
        async with self._ending(session):
            yield session

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction with no tenant: row-level security shows it no tenant rows.

        The tenant is cleared explicitly, so a session-level `SET app.tenant_id` left on a
        pooled connection by anyone cannot carry over into it.
        """
        session = await self._begin(SET_TENANT, ("",))
        async with self._ending(session):
            yield session

    async def begin_tenant(
        self, tenant_id: uuid.UUID, *, opening: Opening | None = None
    ) -> AsyncSession:
        """`tenant_session` for a transaction whose end is not a block: whoever holds it must
        `end` it."""
        if not isinstance(tenant_id, uuid.UUID):
            raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
        if opening is None:
            return await self._begin(SET_TENANT, (str(tenant_id),))
        first = f"SELECT {opening.function}(%s{', %s' * len(opening.arguments)})"
        return await self._begin(first, (tenant_id, *opening.arguments))

    async def end(self, session: AsyncSession, *, commit: bool) -> None:
        """Commit (or roll back) `session`'s transaction and close it: its connection goes
        back to the pool. A commit that fails rolls back and raises."""
        try:
            if commit:
                await self._commit(session)
            else:
                await session.rollback()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()

    @asynccontextmanager
    async def _ending(self, session: AsyncSession) -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            await self.end(session, commit=False)
            raise
        await self.end(session, commit=True)

    @staticmethod
    async def _commit(session: AsyncSession) -> None:
        """Flush, then COMMIT, checking that the server did commit."""
        await session.flush()
        committed = await (await driver_of(session)).execute(b"COMMIT")
        # PostgreSQL answers COMMIT of a transaction a failed statement aborted with ROLLBACK,
        # not an error: nothing was saved, and the caller must not answer as if it was.
        if committed.statusmessage != "COMMIT":
            raise TransactionAbortedError("the transaction was aborted by an earlier error")
        await session.commit()  # the ORM's bookkeeping; the driver has nothing left to send

    async def _begin(self, first: str, parameters: Sequence[Any]) -> AsyncSession:
        """A session whose transaction has run `first`.

        A pooled connection the server has since closed (a restart, `pg_terminate_backend`,
        a failover) fails on its first statement. Nothing has happened in the transaction
        yet, so it is started again once, in a fresh pool: every connection of the old one
        is as likely to be dead.
        """
        try:
            return await self._run_first(first, parameters)
        except _DeadConnectionError:
            await self.engine.dispose()
        return await self._run_first(first, parameters)

    async def _run_first(self, first: str, parameters: Sequence[Any]) -> AsyncSession:
        # Straight to the driver: this runs at the start of every transaction, and the ORM's
        # statement machinery costs more than the round trip itself.
        session = self._sessions()
        try:
            connection = await session.connection()
            driver = await _psycopg(connection)
            try:
                cursor = await driver.execute(first, parameters)
            except psycopg.OperationalError as exc:
                # A cancelled task's statement is interrupted and its connection left broken
                # too: that is the cancellation going on, not a dead connection to replace.
                if isinstance(exc.__context__, asyncio.CancelledError):
                    raise exc.__context__ from None
                if not driver.broken:
                    raise
                await connection.invalidate()
                raise _DeadConnectionError from None
            row = await cursor.fetchone()
            session.info[OPENED] = row[0] if row else None
        except BaseException:
            await session.close()
            raise
        return session

    async def verify_runtime_role(self) -> None:
        """Refuse a connection that is not the powerless runtime role (see `ramparts migrate`).

        Whatever the URL says, this asks the server who we are and what we can do.
        """
        async with self.session() as session:
            row = (await session.execute(text(RUNTIME_ROLE_CHECK))).one()
        user, superuser, bypass_rls, member_of, owns = row
        problems = []
        if user != APP_ROLE:
            problems.append(f"connected as {user!r}, not {APP_ROLE!r}")
        if superuser or bypass_rls:
            problems.append("the role is SUPERUSER or BYPASSRLS")
        if member_of:
            problems.append("the role is a member of other roles")
        if owns:
            problems.append("the role owns objects in the database")
        if problems:
            raise UnsafeRuntimeRoleError("unsafe runtime database role: " + "; ".join(problems))

    async def dispose(self) -> None:
        await self.engine.dispose()
