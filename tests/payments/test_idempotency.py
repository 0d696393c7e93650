"""The idempotency store on real PostgreSQL: replays, refusals, waits, expiry, and one execution
for concurrent duplicates in two processes that call the real sandbox PSP."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyStore,
    StoredResponse,
    check_key,
    request_fingerprint,
)
from ramparts.payments.psp import TENANT_METADATA_KEY, StripePsp
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from ramparts.problems import Problem, ProblemType

pytestmark = pytest.mark.anyio

FINGERPRINT = request_fingerprint("POST", "/api/things/1/deposit", "user-1", b'{"amount":5}')
OTHER = request_fingerprint("POST", "/api/things/1/deposit", "user-1", b'{"amount":6}')


def new_tenant(urls: DatabaseUrls) -> uuid.UUID:
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Idem', 'eu')",
            (tenant, f"idem-{tenant.hex[:12]}"),
        )
    return tenant


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(urls.app, pool_size=4)
    yield db
    await db.dispose()


def test_fingerprint_is_the_request() -> None:
    same = request_fingerprint("post", "/api/things/1/deposit", "user-1", b'{ "amount": 5 }')
    assert same == FINGERPRINT  # JSON compared by content
    assert len(FINGERPRINT) == 32
    assert FINGERPRINT != OTHER
    other_path = request_fingerprint("POST", "/api/things/2/deposit", "user-1", b'{"amount":5}')
    other_caller = request_fingerprint("POST", "/api/things/1/deposit", "user-2", b'{"amount":5}')
    assert len({FINGERPRINT, other_path, other_caller}) == 3
    assert request_fingerprint("POST", "/p", "u", b"a=1") != request_fingerprint(
        "POST", "/p", "u", b"a=2"
    )
    # The query is part of the request: another amount there is another request.
    path, body = "/api/things/1/deposit", b'{"amount":5}'
    with_query = request_fingerprint("POST", path, "user-1", body, b"amount=1&currency=eur")
    assert with_query != FINGERPRINT
    assert with_query != request_fingerprint("POST", path, "user-1", body, b"amount=2&currency=eur")
    assert with_query == request_fingerprint("POST", path, "user-1", body, b"currency=eur&amount=1")


def test_key_rules() -> None:
    with pytest.raises(Problem) as missing:
        check_key(None)
    assert (missing.value.status, missing.value.type) == (
        400,
        ProblemType.IDEMPOTENCY_KEY_REQUIRED,
    )
    for bad in ["", "x" * (MAX_KEY_LENGTH + 1), "has space", "tab\tkey", "caf\u00e9"]:
        with pytest.raises(Problem) as refused:
            check_key(bad)
        assert (refused.value.status, refused.value.type) == (400, ProblemType.INVALID_REQUEST)
    assert check_key("k" * MAX_KEY_LENGTH) == "k" * MAX_KEY_LENGTH


def test_retention_is_at_least_a_day() -> None:
    with pytest.raises(ValueError, match="at least"):
        IdempotencyStore(retention=timedelta(hours=23))


async def test_replay_byte_for_byte_and_refuse_another_request(
    urls: DatabaseUrls, database: Database
) -> None:
    tenant, other_tenant = new_tenant(urls), new_tenant(urls)
    store = IdempotencyStore()
    body = b'{"id":"p1","amount":5,"note":"\xc3\xa9t\xc3\xa9"}'
    async with database.tenant_session(tenant) as session:
        claim = await store.claim(session, tenant, "key-1", FINGERPRINT)
        assert claim.replay is None
        await store.complete(session, claim, 201, "application/json", body)
    async with database.tenant_session(tenant) as session:
        again = await store.claim(session, tenant, "key-1", FINGERPRINT)
        assert again.replay == StoredResponse(201, "application/json", body)
        replayed = again.replay.response()
        assert (replayed.status_code, replayed.body) == (201, body)
        assert replayed.headers["content-type"] == "application/json"
        with pytest.raises(Problem) as reused:
            await store.claim(session, tenant, "key-1", OTHER)
        assert (reused.value.status, reused.value.type) == (
            422,
            ProblemType.IDEMPOTENCY_KEY_REUSED,
        )
        with pytest.raises(RuntimeError, match="replayed"):
            await store.complete(session, again, 201, "application/json", b"{}")
    # Keys are per tenant: another tenant's same key is its own.
    async with database.tenant_session(other_tenant) as session:
        assert (await store.claim(session, other_tenant, "key-1", OTHER)).replay is None


async def test_a_rolled_back_request_leaves_the_key_free(
    urls: DatabaseUrls, database: Database
) -> None:
    tenant = new_tenant(urls)
    store = IdempotencyStore()
    session = await database.begin_tenant(tenant)
    await store.claim(session, tenant, "fails", FINGERPRINT)
    await database.end(session, commit=False)  # the work failed
    async with database.tenant_session(tenant) as session:
        # Not even bound to its first request: nothing of it was kept.
        assert (await store.claim(session, tenant, "fails", OTHER)).replay is None


async def test_in_flight_waits_then_replays_or_answers_409(
    urls: DatabaseUrls, database: Database
) -> None:
    tenant = new_tenant(urls)
    patient = IdempotencyStore(wait=timedelta(seconds=10))
    hasty = IdempotencyStore(wait=timedelta(milliseconds=300))
    first = await database.begin_tenant(tenant)  # one connection...
    claim = await patient.claim(first, tenant, "slow", FINGERPRINT)
    assert claim.replay is None

    async with database.tenant_session(tenant) as second:  # ...racing another
        started = time.monotonic()
        with pytest.raises(Problem) as busy:
            await hasty.claim(second, tenant, "slow", FINGERPRINT)
        assert time.monotonic() - started >= 0.25
        assert (busy.value.status, busy.value.type) == (409, ProblemType.IDEMPOTENCY_KEY_IN_FLIGHT)
        assert busy.value.headers == {"Retry-After": "1"}
        # The transaction is still usable after the refusal (the wait ran in a savepoint).
        assert (await second.execute(text("SHOW lock_timeout"))).scalar_one() == "0"

    async def finish_later() -> None:
        await asyncio.sleep(0.3)
        await patient.complete(first, claim, 201, "application/json", b'{"done":true}')
        await database.end(first, commit=True)

    async with database.tenant_session(tenant) as third:
        finishing = asyncio.create_task(finish_later())
        waited = await patient.claim(third, tenant, "slow", FINGERPRINT)
        await finishing
    assert waited.replay == StoredResponse(201, "application/json", b'{"done":true}')


async def test_a_waiting_duplicate_runs_when_the_first_rolls_back(
    urls: DatabaseUrls, database: Database
) -> None:
    tenant = new_tenant(urls)
    store = IdempotencyStore()
    first = await database.begin_tenant(tenant)
    await store.claim(first, tenant, "rollback", FINGERPRINT)

    async def fail_later() -> None:
        await asyncio.sleep(0.3)
        await database.end(first, commit=False)

    async with database.tenant_session(tenant) as second:
        failing = asyncio.create_task(fail_later())
        claim = await store.claim(second, tenant, "rollback", FINGERPRINT)
        await failing
    assert claim.replay is None


async def test_expired_keys_are_taken_over_and_purged(
    urls: DatabaseUrls, database: Database
) -> None:
    tenant = new_tenant(urls)
    store = IdempotencyStore()
    async with database.tenant_session(tenant) as session:
        for key in ("old", "older", "fresh"):
            claim = await store.claim(session, tenant, key, FINGERPRINT)
            await store.complete(session, claim, 200, "application/json", b"{}")
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        with owner.transaction():
            owner.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
            owner.execute(
                "UPDATE idempotency_keys SET created_at = now() - interval '3 days', "
                "expires_at = now() - interval '1 second' WHERE key IN ('old', 'older')"
            )
        # The database itself keeps a key at least a day.
        with owner.transaction(force_rollback=True):
            owner.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
            with pytest.raises(psycopg.errors.CheckViolation):
                owner.execute(
                    "UPDATE idempotency_keys SET expires_at = created_at + interval '23 hours'"
                )
    async with database.tenant_session(tenant) as session:
        taken = await store.claim(session, tenant, "old", OTHER)  # as if never used
        assert taken.replay is None
        assert await store.purge_expired(session) == 1  # "older"; "old" is alive again
        kept = await session.execute(text("SELECT key FROM idempotency_keys"))
        assert sorted(kept.scalars()) == ["fresh", "old"]


# --- concurrent duplicates in two processes, one PSP call ---------------------------------------
RACERS_PER_PROCESS = 12


def _race(app_url: str, api_base: str, tenant: str, key: str, start_at: float) -> list[bytes]:
    """One process: RACERS_PER_PROCESS tasks, each a whole request with its own transaction."""

    async def one(database: Database, psp: StripePsp) -> bytes:
        store = IdempotencyStore()
        tenant_id = uuid.UUID(tenant)
        session = await database.begin_tenant(tenant_id)
        try:
            claim = await store.claim(session, tenant_id, key, FINGERPRINT)
            if claim.replay is not None:
                await database.end(session, commit=True)
                return claim.replay.body
            intent = await psp.create_payment_intent(
                tenant_id,
                amount=5000,
                currency="eur",
                idempotency_key=key,
                metadata={"race": key},
            )
            body = f'{{"psp_id":"{intent.id}"}}'.encode()
            await store.complete(session, claim, 201, "application/json", body)
        except BaseException:
            await database.end(session, commit=False)
            raise
        await database.end(session, commit=True)
        return body

    async def main() -> list[bytes]:
        database = Database(make_url(app_url), pool_size=RACERS_PER_PROCESS)
        psp = StripePsp.connect(SecretStr(SANDBOX_API_KEY), api_base=api_base)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        try:
            racers = (one(database, psp) for _ in range(RACERS_PER_PROCESS))
            return list(await asyncio.gather(*racers))
        finally:
            await psp.aclose()
            await database.dispose()

    return asyncio.run(main())


def test_concurrent_duplicates_in_two_processes_make_one_psp_call(
    urls: DatabaseUrls, sandbox: Sandbox, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    key = f"race-{uuid.uuid4().hex}"
    app_url = urls.app.render_as_string(hide_password=False)
    start_at = time.time() + 2  # both processes ready before the race starts
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = [
            pool.apply_async(_race, (app_url, sandbox.api_base, str(tenant), key, start_at))
            for _ in range(2)
        ]
        bodies = [body for result in results for body in result.get(timeout=60)]
    assert len(bodies) == 2 * RACERS_PER_PROCESS
    assert len(set(bodies)) == 1, "every duplicate gets the first response"
    intents = [
        i
        for i in buyer.v1.payment_intents.list(params={"limit": 100}).data
        if i.metadata.to_dict().get("race") == key
    ]
    assert len(intents) == 1, "exactly one PaymentIntent at the PSP"
    assert intents[0].metadata[TENANT_METADATA_KEY] == str(tenant)
    assert bodies[0] == f'{{"psp_id":"{intents[0].id}"}}'.encode()
