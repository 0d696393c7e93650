"""Encrypted columns: the column type, the service that seals and opens them under the
tenant's data keys, and the job that re-encrypts them after a data key rotation.

An encrypted column is declared once as an `EncryptedColumn` (table, column, and the SQL that
names its row); that declaration fixes the AAD, so the service that writes it and the job that
re-encrypts it cannot disagree. A runtime module's declaration is also its registration; an
app lists its columns in its `App`, and whoever runs rotation or shredding passes them in:
`encrypted_columns(app_columns)` is the one list both work from, so a new column is covered
without an edit anywhere else. In the database the column has the domain `sealed_field`
(migration 0009), which refuses anything that is not a sealed field: plaintext cannot be
written there even by a bug or by hand; and re-encryption refuses to run while a column of
that domain is declared by nobody (it would stay under an old key).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from psycopg.errors import LockNotAvailable
from sqlalchemy import LargeBinary, bindparam, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeDecorator

from ramparts.config import APPS_ENTRY_POINT_GROUP
from ramparts.crypto.fields import FieldCipher, FieldDecryptionError
from ramparts.crypto.keys import DataKeys
from ramparts.db.engine import Database

__all__ = [
    "EncryptedColumn",
    "RowsLockedError",
    "Sealed",
    "SealedColumn",
    "SealedFields",
    "UndeclaredColumnsError",
    "count_sealed",
    "encrypted_columns",
    "reencrypt",
]

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RowsLockedError(Exception):
    """Re-encryption could not reach rows that running requests kept locked."""


class UndeclaredColumnsError(Exception):
    """The database has sealed columns that no declaration covers, so re-encryption would
    leave them under an old key."""


class Sealed(bytes):
    """A field sealed by `SealedFields.seal`: the only value an encrypted column takes."""


class SealedColumn(TypeDecorator[Sealed]):
    """SQLAlchemy type of an encrypted column: binds `Sealed` values only, so a plaintext
    handed to it by mistake fails in Python before it reaches the database."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sealed | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, Sealed):
            raise TypeError("an encrypted column takes only values sealed by SealedFields.seal")
        return bytes(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Sealed | None:
        return None if value is None else Sealed(value)


@dataclass(frozen=True)
class EncryptedColumn:
    """`row` is the SQL expression (over the table's columns) that the AAD names the row by."""

    table: str
    column: str
    row: str

    def __post_init__(self) -> None:
        for name in (self.table, self.column):
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"bad SQL identifier {name!r}")
        declared = _DECLARED.setdefault((self.table, self.column), self)
        if declared != self:  # two AADs for one column: one of them would never open
            raise ValueError(f"{self.table}.{self.column} is declared twice, differently")

    def param(self, name: str) -> BindParameter[Sealed]:
        """A bind parameter of the encrypted type, for `text(...).bindparams(...)`."""
        return bindparam(name, type_=SealedColumn())


_DECLARED: dict[tuple[str, str], EncryptedColumn] = {}


def encrypted_columns(app_columns: Iterable[EncryptedColumn] = ()) -> tuple[EncryptedColumn, ...]:
    """Every encrypted column: the runtime's own and `app_columns` (what the apps declare,
    passed in by the caller: this layer knows no app), by table and column."""
    found = {(column.table, column.column): column for column in _runtime_columns()}
    found.update(((column.table, column.column), column) for column in app_columns)
    return tuple(found[key] for key in sorted(found))


@functools.cache
def _runtime_columns() -> tuple[EncryptedColumn, ...]:
    """The columns the runtime's modules declare, each module imported once: rotation must not
    depend on which modules a command happened to load. App packages (published under the
    apps' entry-point group) are left out: an app's columns are the ones its App lists.
    Migrations are scripts for Alembic and declare nothing."""
    import ramparts  # noqa: PLC0415 - the package itself, to walk it

    apps = {
        ".".join(entry.module.split(".")[:2])
        for entry in entry_points(group=APPS_ENTRY_POINT_GROUP)
    } - {"ramparts"}
    found: dict[tuple[str, str], EncryptedColumn] = {}
    for module in _runtime_modules(ramparts.__path__, "ramparts.", apps):
        for value in vars(module).values():
            if isinstance(value, EncryptedColumn):
                found[value.table, value.column] = value
    return tuple(found.values())


def _runtime_modules(path: Iterable[str], prefix: str, apps: set[str]) -> Iterator[ModuleType]:
    for found in pkgutil.iter_modules(path, prefix):
        if found.name in apps or found.name.endswith(".migrations"):
            continue
        module = importlib.import_module(found.name)
        yield module
        if found.ispkg:
            yield from _runtime_modules(module.__path__, f"{found.name}.", apps)


class SealedFields:
    """Seals and opens encrypted columns of the session's tenant."""

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    async def seal(
        self,
        session: AsyncSession,
        tenant: uuid.UUID,
        column: EncryptedColumn,
        row: str | uuid.UUID,
        value: bytes,
    ) -> Sealed:
        key = await self._keys.current(session, tenant)
        sealed = FieldCipher.seal(
            key, table=column.table, column=column.column, row=row, value=value
        )
        return Sealed(sealed)

    async def open(
        self,
        session: AsyncSession,
        tenant: uuid.UUID,
        column: EncryptedColumn,
        row: str | uuid.UUID,
        sealed: bytes,
    ) -> bytes:
        key = await self._keys.version(session, tenant, FieldCipher.version_of(sealed))
        return FieldCipher.open(
            key, table=column.table, column=column.column, row=row, sealed=sealed
        )

    async def blind_index(
        self, session: AsyncSession, tenant: uuid.UUID, column: str, value: str
    ) -> bytes:
        """A keyed HMAC for equality search (never a plain hash of a guessable value)."""
        return FieldCipher.blind_index(
            await self._keys.index_key(session, tenant), column=column, value=value
        )


async def reencrypt(
    owner: Database,
    keys: DataKeys,
    tenant: uuid.UUID,
    columns: Sequence[EncryptedColumn],
    *,
    batch: int = 200,
    lock_wait: float = 30.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Re-seal every field of `tenant` under its newest data key version.

    Each batch commits on its own and only rows still under an older version are picked, so an
    interrupted run resumes where it stopped and a finished one finds nothing left to do.
    Runs as the owner, in the tenant's session (the owner need not bypass row-level
    security); `progress(done, total)` is called after each batch. Returns rows done; raises
    RowsLockedError when rows stay locked by others for longer than `lock_wait` seconds.
    """
    async with owner.tenant_session(tenant) as session:
        undeclared = await _undeclared(session, columns)
        if undeclared:
            raise UndeclaredColumnsError(
                f"sealed column(s) {', '.join(undeclared)} declared by no installed app: "
                "re-encrypting without them would leave them under the old key; install the "
                "app that brought them (or drop them), then run `ramparts keys reencrypt`"
            )
        columns = await _present(session, columns)
        newest = (await keys.current(session, tenant)).version
        total = 0
        for column in columns:
            stale = await session.scalar(
                text(
                    f"SELECT count(*) FROM {column.table} "  # noqa: S608  # nosec B608 # declared tables and columns, checked identifiers
                    f"WHERE {_STALE.format(column=column.column)}"
                ),
                {"tenant": tenant, "newest": newest},
            )
            total += int(stale or 0)
    done = 0
    progress(done, total)
    for column in columns:
        # First what nobody holds; then, waiting at most `lock_wait` per batch, the rows a
        # running request has locked (a chat holds its conversation through its model calls):
        # a rotation that reports success has left nothing on an old key.
        for wait in (False, True):
            while moved := await _reencrypt_batch(
                owner,
                keys,
                tenant,
                column,
                newest=newest,
                batch=batch,
                lock_wait=lock_wait if wait else None,
            ):
                done += moved
                progress(done, total)
    return done


async def count_sealed(
    session: AsyncSession, tenant: uuid.UUID, columns: Sequence[EncryptedColumn]
) -> list[dict[str, Any]]:
    """How many fields of `tenant` each column holds sealed: `{"column": "table.column",
    "fields": n}` each (a list, not a mapping: column names such as `sealed_secret` are keys
    the audit trail's redaction would hide)."""
    counts = []
    for column in await _present(session, columns):
        found = await session.scalar(
            text(
                f"SELECT count({column.column}) FROM {column.table} "  # noqa: S608  # nosec B608 # declared tables and columns, checked identifiers
                "WHERE tenant_id = :tenant"
            ),
            {"tenant": tenant},
        )
        counts.append({"column": f"{column.table}.{column.column}", "fields": int(found or 0)})
    return counts


async def _present(
    session: AsyncSession, columns: Sequence[EncryptedColumn]
) -> list[EncryptedColumn]:
    """The columns whose table this database has: an installed app that was never served
    has not created its tables (one that was served and is no longer keeps them, and they are
    covered)."""
    tables = set(
        await session.scalars(
            text("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()")
        )
    )
    return [column for column in columns if column.table in tables]


async def _undeclared(session: AsyncSession, columns: Sequence[EncryptedColumn]) -> list[str]:
    """Columns of the `sealed_field` domain that none of `columns` names, as table.column."""
    in_database = await session.execute(
        text(
            "SELECT table_name::text, column_name::text FROM information_schema.columns "
            "WHERE domain_name = 'sealed_field' AND table_schema = current_schema()"
        )
    )
    declared = {(column.table, column.column) for column in columns}
    return sorted(f"{table}.{name}" for table, name in in_database if (table, name) not in declared)


# Only identifiers checked by EncryptedColumn and its declared row expression are formatted
# into these statements; every value is a bind parameter.
_STALE = "tenant_id = :tenant AND ramparts_sealed_version({column}) < :newest"


async def _reencrypt_batch(
    owner: Database,
    keys: DataKeys,
    tenant: uuid.UUID,
    column: EncryptedColumn,
    *,
    newest: int,
    batch: int,
    lock_wait: float | None,
) -> int:
    """Re-seal up to `batch` stale fields of one column, in one transaction: rows others hold
    are skipped, or with `lock_wait` (seconds) waited for."""
    table, name = column.table, column.column
    stale = _STALE.format(column=name)
    locking = "FOR UPDATE SKIP LOCKED" if lock_wait is None else "FOR UPDATE"
    async with owner.tenant_session(tenant) as session:
        if lock_wait is not None:
            await session.execute(
                text("SELECT set_config('lock_timeout', :wait, true)"),
                {"wait": f"{int(lock_wait * 1000)}ms"},
            )
        try:
            rows = (
                await session.execute(
                    text(
                        f"SELECT ctid::text, ({column.row})::text, {name} "  # noqa: S608  # nosec B608 # declared tables and columns, checked identifiers
                        f"FROM {table} WHERE {stale} LIMIT :batch {locking}"
                    ),
                    {"tenant": tenant, "newest": newest, "batch": batch},
                )
            ).all()
        except DBAPIError as exc:
            if not isinstance(exc.orig, LockNotAvailable):
                raise
            raise RowsLockedError(
                f"{table}.{name}: rows stayed locked by running requests for {lock_wait:g} s; "
                "nothing else is lost: run `ramparts keys reencrypt` again"
            ) from None
        target = await keys.version(session, tenant, newest)
        update = text(
            f"UPDATE {table} SET {name} = :sealed "  # noqa: S608  # nosec B608 # declared tables and columns, checked identifiers
            "WHERE ctid = CAST(:ctid AS tid) AND tenant_id = :tenant"
        ).bindparams(column.param("sealed"))
        for ctid, row, sealed in rows:
            try:
                old = await keys.version(session, tenant, FieldCipher.version_of(bytes(sealed)))
                value = FieldCipher.open(
                    old, table=table, column=name, row=row, sealed=bytes(sealed)
                )
            except FieldDecryptionError as exc:  # stop, naming the row: never skip data
                raise FieldDecryptionError(
                    f"{exc} (row {row}); nothing after it was moved"
                ) from None
            resealed = FieldCipher.seal(target, table=table, column=name, row=row, value=value)
            await session.execute(
                update, {"sealed": Sealed(resealed), "ctid": ctid, "tenant": tenant}
            )
    return len(rows)
