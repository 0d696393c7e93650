"""The chain itself: what the database accepts, what verification finds, where it points.

Tamper tests act as the database owner with triggers switched off for their session
(`session_replication_role = replica`), which is exactly the power an insider or an attacker
with the superuser password has; the point is that `verify_chain` still finds and locates it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from ramparts.audit.chain import GENESIS, event_hash
from ramparts.audit.events import SYSTEM_TENANT, Action, Actor, Decision, Resource
from ramparts.audit.sequencer import Sequencer
from ramparts.audit.services import AuditLog, Checkpointer, ensure_audit_key
from ramparts.audit.verify import ChainReport, load_checkpoints, verify_chain
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from tests.identity.helpers import TEST_REDACTOR

pytestmark = pytest.mark.anyio


async def _write(urls: DatabaseUrls, tenant: uuid.UUID, count: int) -> None:
    """Record `count` events on `tenant`'s chain, then let a sequencer chain them."""
    database = Database(urls.app, pool_size=1)
    audit = AuditLog(database, TEST_REDACTOR)
    try:
        for number in range(count):
            await audit.record_apart(
                tenant,
                Actor("user", tenant=tenant, id=f"user-{number}", roles=("buyer",)),
                Action.LOGIN_FAILED,
                Resource("user", f"user-{number}"),
                Decision.DENY,
                {"attempt": number},
            )
        await Sequencer(database, max_lag_seconds=1).drain()
    finally:
        await database.dispose()


async def _checkpoint(urls: DatabaseUrls, kms: Kms, tenant: uuid.UUID) -> list[int]:
    """Sign `tenant`'s chain (creating the signing key if needed); the sequences signed."""
    owner, app = Database(urls.owner, pool_size=1), Database(urls.app, pool_size=1)
    try:
        async with owner.session() as session:
            await ensure_audit_key(session, kms)
        return [c.seq for c in await Checkpointer(app, kms).sign_all(tenant)]
    finally:
        await owner.dispose()
        await app.dispose()


@pytest.fixture
def owner(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        yield conn


@pytest.fixture
async def chain(urls: DatabaseUrls) -> uuid.UUID:
    """A tenant with a ten-event chain of its own."""
    tenant = uuid.uuid4()
    await _write(urls, tenant, 10)
    return tenant


def verify(owner: psycopg.Connection, tenant: uuid.UUID, **options: object) -> ChainReport:
    return verify_chain(owner, tenant, **options)  # type: ignore[arg-type]


def tamper(owner: psycopg.Connection, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run statements with the append-only triggers off, as only a superuser can."""
    with owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        for sql, params in statements:
            owner.execute(sql, params)


async def test_an_untouched_chain_verifies_and_every_hash_is_recomputable(
    owner: psycopg.Connection, chain: uuid.UUID
) -> None:
    report = verify(owner, chain)
    assert report.intact, report.as_json()
    assert (report.events, report.head_seq) == (10, 10)
    rows = owner.execute(
        "SELECT seq, body, prev_hash, hash FROM audit_events WHERE tenant_id = %s ORDER BY seq",
        (chain,),
    ).fetchall()
    assert [row[0] for row in rows] == list(range(1, 11))
    previous = GENESIS
    for _, body, prev_hash, digest in rows:
        # The documented recipe, with nothing from Ramparts but the rows.
        assert prev_hash == previous
        assert digest == event_hash(body.encode(), prev_hash)
        previous = digest


async def test_the_runtime_role_can_only_append_and_read_its_own_tenant(
    urls: DatabaseUrls, chain: uuid.UUID
) -> None:
    other = uuid.uuid4()
    await _write(urls, other, 1)
    with psycopg.connect(libpq(urls.app)) as app:
        app.execute("SELECT set_config('app.tenant_id', %s, false)", (str(chain),))
        seen = app.execute("SELECT DISTINCT tenant_id FROM audit_events").fetchall()
        assert seen == [(chain,)]
        for statement in (
            "UPDATE audit_events SET body = body",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
            "UPDATE audit_checkpoints SET seq = seq",
            "DELETE FROM audit_signing_keys",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)
            app.rollback()
            app.execute("SELECT set_config('app.tenant_id', %s, false)", (str(chain),))
        # No row goes in but through the queue, into its own tenant's chain or any other.
        for tenant in (chain, other):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(
                    "INSERT INTO audit_events (tenant_id, seq, body, prev_hash, hash) "
                    "VALUES (%s, 99, '{}', %s, %s)",
                    (tenant, bytes(32), bytes(32)),
                )
            app.rollback()
        # A head that tries to supply its own position is refused.
        app.execute("SELECT set_config('app.tenant_id', %s, false)", (str(chain),))
        with pytest.raises(errors.RaiseException, match="without their last keys"):
            app.execute("""SELECT * FROM audit_enqueue(ARRAY['{"action":"x","seq":1'])""")
        app.rollback()
        # Outside a tenant session there is no chain to append to.
        app.execute("SELECT set_config('app.tenant_id', '', false)")
        with pytest.raises(errors.RaiseException, match="inside a tenant session"):
            app.execute('SELECT * FROM audit_enqueue(ARRAY[\'{"action":"x"\'])')


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET body = body", "DELETE FROM audit_events", "TRUNCATE audit_events"],
)
async def test_the_triggers_refuse_changes_even_from_the_owner(
    owner: psycopg.Connection, chain: uuid.UUID, statement: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        owner.execute(statement)
    assert verify(owner, chain).intact


async def test_a_changed_field_is_found_at_its_event(
    owner: psycopg.Connection, chain: uuid.UUID
) -> None:
    tamper(
        owner,
        (
            "UPDATE audit_events SET body = replace(body, '\"deny\"', '\"allow\"') "
            "WHERE tenant_id = %s AND seq = 4",
            (chain,),
        ),
    )
    report = verify(owner, chain)
    assert not report.intact
    assert [(p.kind, p.seq) for p in report.problems] == [("hash_mismatch", 4)]
    first = report.as_json()["first_break"]
    assert first["seq"] == 4
    assert first["expected"] != first["found"]


async def test_a_deleted_event_is_found(owner: psycopg.Connection, chain: uuid.UUID) -> None:
    tamper(owner, ("DELETE FROM audit_events WHERE tenant_id = %s AND seq = 6", (chain,)))
    report = verify(owner, chain)
    assert sorted((p.kind, p.seq) for p in report.problems) == [
        ("broken_link", 7),
        ("missing_events", 6),
    ]
    assert report.as_json()["first_break"]["seq"] == 6


async def test_two_reordered_events_are_found(owner: psycopg.Connection, chain: uuid.UUID) -> None:
    swap = "UPDATE audit_events SET seq = %s WHERE tenant_id = %s AND seq = %s"
    tamper(owner, (swap, (1000, chain, 3)), (swap, (3, chain, 4)), (swap, (4, chain, 1000)))
    report = verify(owner, chain)
    kinds = {(p.kind, p.seq) for p in report.problems}
    assert ("broken_link", 3) in kinds
    assert ("misplaced_event", 3) in kinds
    assert ("misplaced_event", 4) in kinds
    assert report.as_json()["first_break"]["seq"] == 3


async def test_a_tail_cut_after_a_checkpoint_is_found(
    urls: DatabaseUrls, owner: psycopg.Connection, chain: uuid.UUID, kms: Kms
) -> None:
    assert await _checkpoint(urls, kms, chain) == [10]
    tamper(owner, ("DELETE FROM audit_events WHERE tenant_id = %s AND seq > 7", (chain,)))
    report = verify(owner, chain)
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", 10)]
    assert report.head_seq == 7


async def test_a_rewritten_history_fails_against_a_checkpoint_kept_elsewhere(
    urls: DatabaseUrls, owner: psycopg.Connection, chain: uuid.UUID, kms: Kms
) -> None:
    """The strongest insider: rewrites an event, recomputes every later hash so the chain is
    self-consistent, and deletes the checkpoints stored in the database. Only a copy of a
    checkpoint kept outside the database can catch that, and it does."""
    await _checkpoint(urls, kms, chain)
    exported = owner.execute(
        "SELECT c.tenant_id, c.seq, c.head_hash, c.signed_at, c.key_id, c.signature, "
        "k.public_key FROM audit_checkpoints c JOIN audit_signing_keys k USING (key_id) "
        "WHERE c.tenant_id = %s",
        (chain,),
    ).fetchall()
    lines = [
        (
            f'{{"tenant": "{t}", "seq": {s}, "hash": "{bytes(h).hex()}", '
            f'"signed_at": "{at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}", "key_id": "{k}", '
            f'"signature": "{bytes(sig).hex()}", "public_key": "{bytes(pub).hex()}"}}'
        )
        for t, s, h, at, k, sig, pub in exported
    ]
    external = load_checkpoints(lines, "offsite.jsonl")
    assert verify(owner, chain, external=external).intact

    rows = owner.execute(
        "SELECT seq, body FROM audit_events WHERE tenant_id = %s ORDER BY seq", (chain,)
    ).fetchall()
    statements: list[tuple[str, tuple[object, ...]]] = [
        ("DELETE FROM audit_checkpoints WHERE tenant_id = %s", (chain,))
    ]
    previous = GENESIS
    for seq, original in rows:
        body = original.replace('"deny"', '"allow"') if seq == 2 else original
        digest = event_hash(body.encode(), previous)
        statements.append(
            (
                "UPDATE audit_events SET body = %s, prev_hash = %s, hash = %s "
                "WHERE tenant_id = %s AND seq = %s",
                (body, previous, digest, chain, seq),
            )
        )
        previous = digest
    tamper(owner, *statements)

    assert verify(owner, chain).intact  # self-consistent: nothing inside the database objects
    report = verify(owner, chain, external=external)
    assert [(p.kind, p.seq) for p in report.problems] == [("checkpoint_mismatch", 10)]


async def test_a_forged_checkpoint_signature_is_found(
    urls: DatabaseUrls, owner: psycopg.Connection, chain: uuid.UUID, kms: Kms
) -> None:
    await _checkpoint(urls, kms, chain)
    tamper(
        owner,
        (
            "UPDATE audit_checkpoints SET signature = %s WHERE tenant_id = %s",
            (bytes(64), chain),
        ),
    )
    assert [(p.kind, p.seq) for p in verify(owner, chain).problems] == [("bad_signature", 10)]


async def test_checkpoints_are_signed_only_for_chains_that_moved(
    urls: DatabaseUrls, chain: uuid.UUID, kms: Kms
) -> None:
    assert await _checkpoint(urls, kms, chain) == [10]
    assert await _checkpoint(urls, kms, chain) == []
    await _write(urls, chain, 1)
    assert await _checkpoint(urls, kms, chain) == [11]


async def test_events_without_a_tenant_go_to_the_system_chain(
    urls: DatabaseUrls, owner: psycopg.Connection
) -> None:
    database = Database(urls.app, pool_size=1)
    try:
        recorded = await AuditLog(database, TEST_REDACTOR).record_apart(
            None, Actor.system(), Action.SIGNING_KEY_ROTATED, None, Decision.ALLOW
        )
    finally:
        await database.dispose()
    assert recorded.tenant == SYSTEM_TENANT
    assert verify(owner, SYSTEM_TENANT).intact


async def test_a_chain_emptied_of_every_event_is_found(
    urls: DatabaseUrls, owner: psycopg.Connection, chain: uuid.UUID, kms: Kms
) -> None:
    tamper(owner, ("DELETE FROM audit_events WHERE tenant_id = %s", (chain,)))
    assert [(p.kind, p.seq) for p in verify(owner, chain).problems] == [("missing_events", 1)]
    # Nothing to sign on a chain without events: no checkpoint, and no crash.
    assert await _checkpoint(urls, kms, uuid.uuid4()) == []
