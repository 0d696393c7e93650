"""`Idempotency-Key` for money-moving requests (PAY-3): one execution per key, the same answer
to every repeat.

Per tenant, a key (1-255 visible ASCII characters) remembers the fingerprint of the request that
first used it (method, path, caller and body) and the response it got, for at least 24 hours:

- same key, same request: the stored response again, byte for byte (status, media type, body);
- same key, another request (another body, path or caller): 422, nothing runs;
- same key while the first request is still running: the repeat waits for it (up to `wait`)
  and then replays its answer; still running after that, 409;
- concurrent duplicates, in any number of processes: exactly one runs.

The guarantee is the database's, not a Python lock: the claim is an `INSERT … ON CONFLICT` on
the primary key (tenant, key) in the request's own transaction. A second transaction inserting
the same key blocks on the first's uncommitted row until that transaction ends: when it commits,
the second reads the stored response; when it rolls back, the row never existed and the second
runs instead. The response is stored in that same transaction, so the record commits exactly
when the work it describes does. A response that is an error (400 and above) rolls the request
transaction back (`RequestTransactionMiddleware`), so the key is left free: a client may retry
a refused or failed request with the same key, and the PSP, called with a key derived from it
(`ramparts.payments.psp.derive_idempotency_key`), answers a repeated call with its first result.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from ramparts.db.request import request_session
from ramparts.identity.auth import PRINCIPAL_KEY, Principal
from ramparts.problems import Problem, ProblemType

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "RETENTION",
    "Claim",
    "IdempotencyStore",
    "Idempotent",
    "IdempotentRequest",
    "StoredResponse",
    "request_fingerprint",
]

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: How long a key is remembered at least (the migration refuses less).
RETENTION = timedelta(hours=24)
#: How long a repeat waits for the first request with its key before answering 409.
DEFAULT_WAIT = timedelta(seconds=10)
# Visible ASCII: a key is logged and compared as it is, so no spaces or control characters.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")
_LOCK_NOT_AVAILABLE = "55P03"

_CLAIM = text(
    "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, expires_at) "
    "VALUES (:tenant, :key, :fingerprint, now() + :retention) "
    # An expired record is taken over as if it were not there.
    "ON CONFLICT (tenant_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
    "status = NULL, media_type = NULL, body = NULL, created_at = now(), "
    "expires_at = EXCLUDED.expires_at WHERE idempotency_keys.expires_at <= now() "
    "RETURNING true"
)
_STORED = text(
    "SELECT fingerprint, status, media_type, body FROM idempotency_keys "
    "WHERE tenant_id = :tenant AND key = :key"
)
_COMPLETE = text(
    "UPDATE idempotency_keys SET status = :status, media_type = :media_type, body = :body "
    "WHERE tenant_id = :tenant AND key = :key AND status IS NULL"
)
_PURGE = text("DELETE FROM idempotency_keys WHERE expires_at <= now()")


@dataclass(frozen=True)
class StoredResponse:
    status: int
    media_type: str
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, media_type=self.media_type)


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: `replay` is the stored response when the request was
    already answered; None means this request owns the key and must run, then `complete`."""

    tenant_id: uuid.UUID
    key: str
    replay: StoredResponse | None


def check_key(key: str | None) -> str:
    """The header's value, or a 400 problem saying what is wrong with it."""
    if key is None:
        raise Problem(
            400,
            ProblemType.IDEMPOTENCY_KEY_REQUIRED,
            f"this request moves money: send an {HEADER} header",
        )
    if not _KEY.fullmatch(key):
        raise Problem(
            400,
            ProblemType.INVALID_REQUEST,
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters",
        )
    return key


def request_fingerprint(
    method: str, path: str, subject: str, body: bytes, query: bytes = b""
) -> bytes:
    """SHA-256 of what makes two requests the same one: method, path, query, caller and body.

    A JSON body is compared by its content (`{"a":1, "b":2}` is `{"b":2,"a":1}`), anything
    else byte for byte. The caller is part of it, so another user of the tenant reusing a key
    gets a 422, never someone else's response.
    """
    try:
        content: Any = json.loads(body) if body else None
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = b"raw:" + body
    # The query's pairs in order of name: `?a=1&b=2` is `?b=2&a=1`, `?amount=2` is not `?amount=1`.
    pairs = sorted(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    ordered = json.dumps(pairs, separators=(",", ":")).encode()
    parts = [method.upper().encode(), path.encode(), ordered, subject.encode(), canonical]
    digest = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different requests join alike
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


class IdempotencyStore:
    """Claims, completes and purges keys in a tenant transaction (see the module docstring)."""

    def __init__(self, *, retention: timedelta = RETENTION, wait: timedelta = DEFAULT_WAIT):
        if retention < RETENTION:
            raise ValueError(f"keys are kept at least {RETENTION}")
        self.retention = retention
        self.wait = wait

    async def claim(
        self, session: AsyncSession, tenant_id: uuid.UUID, key: str, fingerprint: bytes
    ) -> Claim:
        """Own `key` for this request, or learn its stored response; 422 for a different
        request under the key, 409 when the first is still running after `wait`."""
        check_key(key)
        owned = await self._insert(session, tenant_id, key, fingerprint)
        if owned:
            return Claim(tenant_id, key, None)
        stored = (await session.execute(_STORED, {"tenant": tenant_id, "key": key})).one()
        if bytes(stored.fingerprint) != fingerprint:
            raise Problem(
                422,
                ProblemType.IDEMPOTENCY_KEY_REUSED,
                f"this {HEADER} was used for another request; use a new key",
            )
        if stored.status is None:  # committed unanswered: not done by this module
            raise _in_flight()
        return Claim(
            tenant_id, key, StoredResponse(stored.status, stored.media_type, bytes(stored.body))
        )

    async def _insert(
        self, session: AsyncSession, tenant_id: uuid.UUID, key: str, fingerprint: bytes
    ) -> bool:
        # The wait is a lock timeout on this statement only (`SET LOCAL` would outlive it),
        # in a savepoint, so a timeout leaves the request's transaction usable.
        previous = (await session.execute(text("SHOW lock_timeout"))).scalar_one()
        milliseconds = max(1, int(self.wait.total_seconds() * 1000))
        try:
            async with session.begin_nested():
                await session.execute(
                    text("SELECT set_config('lock_timeout', :value, true)"),
                    {"value": f"{milliseconds}ms"},
                )
                inserted = await session.execute(
                    _CLAIM,
                    {
                        "tenant": tenant_id,
                        "key": key,
                        "fingerprint": fingerprint,
                        "retention": self.retention,
                    },
                )
                owned = inserted.scalar_one_or_none() is not None
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise _in_flight() from None
            raise
        finally:
            await session.execute(
                text("SELECT set_config('lock_timeout', :value, true)"), {"value": previous}
            )
        return owned

    async def complete(
        self, session: AsyncSession, claim: Claim, status: int, media_type: str, body: bytes
    ) -> None:
        """Store the response to the claimed request, in the same transaction as its work."""
        if claim.replay is not None:
            raise RuntimeError("a replayed request is not completed again")
        done = await session.execute(
            _COMPLETE,
            {
                "tenant": claim.tenant_id,
                "key": claim.key,
                "status": status,
                "media_type": media_type,
                "body": body,
            },
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise RuntimeError("the idempotency key was not claimed in this transaction")

    async def purge_expired(self, session: AsyncSession) -> int:
        """Forget the session tenant's keys past their retention; how many went."""
        purged = await session.execute(_PURGE)
        return int(purged.rowcount)  # type: ignore[attr-defined]


def _in_flight() -> Problem:
    return Problem(
        409,
        ProblemType.IDEMPOTENCY_KEY_IN_FLIGHT,
        f"a request with this {HEADER} is still being processed; retry later",
        headers={"Retry-After": "1"},
    )


@dataclass
class IdempotentRequest:
    """What a money route gets: `replay` to answer at once, else do the work and `respond`.

    A request without a usable key has no claim: its refusal (`refused`, 400) is raised by
    the first use of `key`, `replay` or `respond`, so that the route's own input validation
    (a 422 for a bad path, query or body) answers first, as on every other route, and nothing
    that moves money can run without a key."""

    store: IdempotencyStore
    session: AsyncSession
    claim: Claim | None
    refused: Problem | None = None

    def _claimed(self) -> Claim:
        if self.claim is None:
            raise self.refused or _in_flight()
        return self.claim

    @property
    def key(self) -> str:
        return self._claimed().key

    @property
    def replay(self) -> Response | None:
        stored = self._claimed().replay
        return stored.response() if stored is not None else None

    async def respond(self, status: int, content: Any) -> Response:
        """The JSON response to this request, stored first so every repeat gets these bytes."""
        claim = self._claimed()
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        media_type = "application/json"
        await self.store.complete(self.session, claim, status, media_type, body)
        return Response(body, status_code=status, media_type=media_type)


class Idempotent:
    """A FastAPI dependency for a money-moving route (after the permission gate, which has
    authenticated the caller and opened the tenant transaction):

        async def charge(..., idempotent: Annotated[IdempotentRequest, Depends(idempotent)]):
            if (replayed := idempotent.replay) is not None:
                return replayed
            ...  # the work, with idempotent.key for the PSP
            return await idempotent.respond(201, {...})
    """

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def __call__(self, request: Request) -> IdempotentRequest:
        principal = request.scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):  # a bug in the route's wiring: a 500
            raise TypeError("an idempotent route must be authenticated")
        session = await request_session(request)
        try:
            key = check_key(request.headers.get(HEADER))
        except Problem as refused:  # raised at first use, after the route's validation
            return IdempotentRequest(self.store, session, None, refused)
        fingerprint = request_fingerprint(
            request.method,
            request.url.path,
            principal.subject,
            await request.body(),
            request.scope.get("query_string", b""),
        )
        claim = await self.store.claim(session, principal.tenant_id, key, fingerprint)
        return IdempotentRequest(self.store, session, claim)
