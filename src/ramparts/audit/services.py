"""Writing, signing and reading the audit trail.

`AuditLog.record(session, actor, action, resource, decision, details)` is the one way events
are written. It queues them on the chain of the session's own tenant (the database reads it
from the session, so no caller can name another tenant's chain), in the caller's transaction:
they commit or roll back with what they describe, and take no lock. The `Sequencer`
(`ramparts.audit.sequencer`) then folds queued events into the hash chain within a bounded
lag. A refusal whose transaction rolls back is written with `record_apart`, in a transaction
of its own, so the evidence survives the rollback.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.chain import canonical
from ramparts.audit.context import current_request
from ramparts.audit.events import SYSTEM_TENANT, Action, Actor, Decision, Resource
from ramparts.config import Settings
from ramparts.crypto.backends import server_secret
from ramparts.crypto.kms import SYSTEM_KEY, Kms
from ramparts.db.engine import Database, driver_of
from ramparts.detectors import Redactor, is_secret_name

__all__ = [
    "AuditLog",
    "Checkpoint",
    "Checkpointer",
    "Event",
    "EventQuery",
    "QueuedEvent",
    "audit_redactor",
    "ensure_audit_key",
    "search_events",
]

log = structlog.get_logger(__name__)

MAX_STRING = 8192
MAX_ITEMS = 500
MAX_DEPTH = 8
MAX_BODY = 262_144
TAIL_BYTES = 128  # what the database appends: seq, tenant and time
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
ACTORS_CACHED = 4096
#: Queued events a search chains before it reads; the sequencer chains any beyond.
OWN_SEQUENCE_EVENTS = 10_000


@dataclass(frozen=True)
class Event:
    """An event not yet recorded; see `AuditLog.record` for the parts."""

    actor: Actor
    action: Action
    resource: Resource | None
    decision: Decision
    details: Mapping[str, Any] | None = None
    policy_ids: Sequence[str] = ()


@dataclass(frozen=True)
class QueuedEvent:
    """An event committed to `tenant`'s queue; its place in the chain comes when sequenced."""

    tenant: uuid.UUID
    queue_id: int


def audit_redactor(settings: Settings, kms: Kms) -> Redactor:
    """The redactor keyed for this installation, so fingerprints match across processes."""
    key = server_secret(settings, kms).get_secret_value().encode()
    return Redactor(hashlib.sha256(b"ramparts audit redaction" + key).digest())


class AuditLog:
    """Queues redacted events for the per-tenant hash chains."""

    def __init__(self, database: Database, redactor: Redactor) -> None:
        self._db = database
        self._redactor = redactor
        # A caller acts again and again with the same token from the same client: its
        # redacted JSON is kept rather than rebuilt for every event.
        self._actor_json = lru_cache(maxsize=ACTORS_CACHED)(self._actor_json_uncached)

    async def record(  # noqa: PLR0917 - the audit.record(...) call the issue names
        self,
        session: AsyncSession,
        actor: Actor,
        action: Action,
        resource: Resource | None,
        decision: Decision,
        details: Mapping[str, Any] | None = None,
        *,
        policy_ids: Sequence[str] = (),
    ) -> QueuedEvent:
        event = Event(actor, action, resource, decision, details, policy_ids)
        return (await self.record_many(session, [event]))[0]

    async def record_many(
        self, session: AsyncSession, events: Sequence[Event]
    ) -> list[QueuedEvent]:
        """Record several events in order in the session's transaction (one AI turn, one batch)."""
        heads = [self._head(event) for event in events]
        # The database checks each head and queues it with its time; the sequencer adds
        # `seq`, `tenant` and `time` (the keys that sort last) and hashes. One round trip,
        # straight to the driver, because this is the hottest write path in Ramparts.
        driver = await driver_of(session)
        # In binary (`%b`): the text format would escape every quotation mark in the JSON, one regex
        # substitution each.
        cursor = await driver.execute("SELECT * FROM audit_enqueue(%b::text[])", (heads,))
        return [QueuedEvent(chain, queue_id) for chain, queue_id in await cursor.fetchall()]

    def _head(self, event: Event) -> str:
        """The event's canonical JSON without its closing brace, redacted and bounded."""
        parts = {
            "action": Action(event.action).value,
            "actor": self._actor(self._with_request(event.actor)),
            "decision": Decision(event.decision).value,
            "details": self._clean(dict(event.details or {})),
            "policy_ids": [str(p) for p in event.policy_ids],
            "resource": self._clean(event.resource.as_json()) if event.resource else None,
        }
        head = canonical(parts)
        if len(head) > MAX_BODY - TAIL_BYTES:
            parts["details"] = {"truncated": True, "size": len(head)}
            head = canonical(parts)
        return head[:-1]

    async def record_apart(  # noqa: PLR0917 - as record, plus the chain
        self,
        tenant: uuid.UUID | None,
        actor: Actor,
        action: Action,
        resource: Resource | None,
        decision: Decision,
        details: Mapping[str, Any] | None = None,
        *,
        policy_ids: Sequence[str] = (),
    ) -> QueuedEvent:
        """Record in a transaction of its own, on `tenant`'s chain or the system chain, so the
        event stays recorded whatever becomes of the caller's transaction."""
        event = Event(actor, action, resource, decision, details, policy_ids)
        return (await self.record_many_apart(tenant, [event]))[0]

    async def record_many_apart(
        self, tenant: uuid.UUID | None, events: Sequence[Event]
    ) -> list[QueuedEvent]:
        """`record_many` in a transaction of its own (see `record_apart`)."""
        async with self._db.tenant_session(tenant or SYSTEM_TENANT) as session:
            return await self.record_many(session, events)

    def _actor(self, actor: Actor) -> Any:
        try:
            return self._actor_json(actor)
        except TypeError:  # roles or factors given as a list: nothing to look up by
            return self._actor_json_uncached(actor)

    def _actor_json_uncached(self, actor: Actor) -> Any:
        return self._clean(actor.as_json())

    @staticmethod
    def _with_request(actor: Actor) -> Actor:
        request = current_request()
        if request is None or (actor.ip and actor.user_agent):
            return actor
        return replace(
            actor, ip=actor.ip or request.ip, user_agent=actor.user_agent or request.user_agent
        )

    def _clean(self, value: Any, depth: int = 0, name: str = "") -> Any:  # noqa: PLR0911
        """JSON-safe, bounded and redacted: secrets by field name, the rest by detectors."""
        if name and is_secret_name(name) and value not in (None, ""):
            return "[REDACTED]"
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else str(value)
        if depth >= MAX_DEPTH:
            return "[TOO_DEEP]"
        if isinstance(value, Mapping):
            items = list(value.items())[:MAX_ITEMS]
            # Keys are text too: an email used as a key is redacted like any other.
            return {self._string(str(k)): self._clean(v, depth + 1, str(k)) for k, v in items}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(v, depth + 1, name) for v in list(value)[:MAX_ITEMS]]
        if isinstance(value, bytes):
            return f"[BYTES:{len(value)}]"
        return self._string(str(value))

    def _string(self, value: str) -> str:
        # PostgreSQL's jsonb refuses NUL and lone surrogates, and audit_enqueue parses heads.
        if not value.isascii() or "\x00" in value:
            value = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        # Redact, then cut: a value straddling the cut would otherwise escape the detectors.
        value = self._redactor.text(value)
        return value[:MAX_STRING] + "…[truncated]" if len(value) > MAX_STRING else value


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    actor: str | None = None
    action: str | None = None
    decision: Decision | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int = 0
    limit: int = 100


async def search_events(
    session: AsyncSession, tenant: uuid.UUID, query: EventQuery
) -> list[dict[str, Any]]:
    """`tenant`'s events matching `query`, oldest first, after sequence `after`.

    An `action` ending in `:*` matches the whole prefix (`identity:login:*`). The session's
    tenant chain is sequenced first, so the reader sees what was recorded up to now rather
    than up to the sequencer's last pass; the session holds the chain until it ends.
    """
    await session.execute(text("SELECT audit_sequence_own(:batch)"), {"batch": OWN_SEQUENCE_EVENTS})
    conditions = ["tenant_id = :tenant", "seq > :after"]
    values: dict[str, Any] = {"tenant": tenant, "after": query.after, "limit": query.limit}
    if query.actor is not None:
        conditions.append("(body::jsonb -> 'actor') ->> 'id' = :actor")
        values["actor"] = query.actor
    if query.action is not None:
        if query.action.endswith(":*"):
            conditions.append("starts_with(audit_action(body), :action)")
            values["action"] = query.action[:-1]
        else:
            conditions.append("audit_action(body) = :action")
            values["action"] = query.action
    if query.decision is not None:
        conditions.append("body::jsonb ->> 'decision' = :decision")
        values["decision"] = query.decision.value
    if query.since is not None:
        conditions.append("audit_time(body) >= :since")
        values["since"] = query.since
    if query.until is not None:
        conditions.append("audit_time(body) < :until")
        values["until"] = query.until
    rows = await session.execute(
        text(
            "SELECT body::jsonb, encode(hash, 'hex') FROM audit_events WHERE "  # noqa: S608  # nosec B608 # constant conditions; every value is a bound parameter
            + " AND ".join(conditions)
            + " ORDER BY seq LIMIT :limit"
        ),
        values,
    )
    return [{**body, "hash": digest} for body, digest in rows]


# -- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that `tenant`'s chain had `head_hash` at `seq`: keep a copy."""

    tenant: uuid.UUID
    seq: int
    head_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes
    public_key: bytes | None = None  # known to whoever signed or exported it
    source: str = "database"  # where verification found it

    def statement(self) -> bytes:
        return checkpoint_statement(self.tenant, self.seq, self.head_hash, self.signed_at)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": str(self.tenant),
            "seq": self.seq,
            "hash": self.head_hash.hex(),
            "signed_at": self.signed_at.strftime(TIME_FORMAT),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
            "public_key": self.public_key.hex() if self.public_key else None,
        }


def checkpoint_statement(
    tenant: uuid.UUID, seq: int, head_hash: bytes, signed_at: datetime
) -> bytes:
    """The bytes an Ed25519 checkpoint signature covers."""
    return canonical(
        {
            "hash": head_hash.hex(),
            "seq": seq,
            "signed_at": signed_at.astimezone(UTC).strftime(TIME_FORMAT),
            "tenant": str(tenant),
        }
    ).encode("ascii")


def _key_context(key_id: str) -> str:
    return f"audit-key:{key_id}"


async def ensure_audit_key(session: AsyncSession, kms: Kms) -> str | None:
    """Create the checkpoint signing key when there is none; the new key id, else None."""
    if (await session.execute(text("SELECT 1 FROM audit_signing_keys LIMIT 1"))).first():
        return None
    key = Ed25519PrivateKey.generate()
    key_id = f"audit-{secrets.token_hex(8)}"
    raw = key.private_bytes_raw()
    await session.execute(
        text(
            "INSERT INTO audit_signing_keys (key_id, public_key, sealed_private) "
            "VALUES (:key_id, :public, :sealed)"
        ),
        {
            "key_id": key_id,
            "public": key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            "sealed": kms.wrap(SYSTEM_KEY, raw, context=_key_context(key_id)),
        },
    )
    return key_id


class Checkpointer:
    """Signs the heads of chains that moved since their last checkpoint."""

    def __init__(self, database: Database, kms: Kms) -> None:
        self._db = database
        self._kms = kms

    async def sign(self, session: AsyncSession) -> Checkpoint | None:
        """Checkpoint the session's chain at its head; None when nothing is new."""
        key_row = (
            await session.execute(
                text(
                    "SELECT key_id, public_key, sealed_private FROM audit_signing_keys "
                    "ORDER BY created_at DESC, key_id LIMIT 1"
                )
            )
        ).first()
        if key_row is None:
            raise LookupError("no audit signing key: run `ramparts migrate`")
        key_id, public_key, sealed = key_row
        chain, head_seq, head_hash = (
            await session.execute(text("SELECT * FROM audit_lock_chain()"))
        ).one()
        last = (
            await session.execute(
                text("SELECT max(seq) FROM audit_checkpoints WHERE tenant_id = :chain"),
                {"chain": chain},
            )
        ).scalar_one()
        if head_seq is None or (last is not None and last >= head_seq):
            return None
        signed_at = datetime.now(UTC)
        private = Ed25519PrivateKey.from_private_bytes(
            self._kms.unwrap(bytes(sealed), context=_key_context(key_id))
        )
        statement = checkpoint_statement(chain, head_seq, bytes(head_hash), signed_at)
        checkpoint = Checkpoint(
            tenant=chain,
            seq=head_seq,
            head_hash=bytes(head_hash),
            signed_at=signed_at,
            key_id=key_id,
            signature=private.sign(statement),
            public_key=bytes(public_key),
        )
        await session.execute(
            text(
                "INSERT INTO audit_checkpoints "
                "(tenant_id, seq, head_hash, signed_at, key_id, signature) "
                "VALUES (:tenant, :seq, :hash, :signed_at, :key_id, :signature)"
            ),
            {
                "tenant": chain,
                "seq": head_seq,
                "hash": checkpoint.head_hash,
                "signed_at": checkpoint.signed_at,
                "key_id": key_id,
                "signature": checkpoint.signature,
            },
        )
        return checkpoint

    async def sign_all(self, tenant: uuid.UUID | None = None) -> list[Checkpoint]:
        """Checkpoint every chain that moved (or just `tenant`'s), each in its own transaction."""
        if tenant is None:
            async with self._db.session() as session:
                chains = list(
                    (await session.execute(text("SELECT * FROM audit_chain_tenants()"))).scalars()
                )
        else:
            chains = [tenant]
        signed = []
        for chain in chains:
            async with self._db.tenant_session(chain) as session:
                checkpoint = await self.sign(session)
            if checkpoint is not None:
                signed.append(checkpoint)
        if signed:
            log.info("audit_checkpoints_signed", count=len(signed))
        return signed
