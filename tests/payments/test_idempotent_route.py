"""The `Idempotent` dependency on a live route: what a money route gets, over real HTTP, with
the real request transaction and the real sandbox PSP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import stripe
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.db.request import RequestTransaction
from ramparts.identity.auth import PRINCIPAL_KEY, Principal
from ramparts.payments.idempotency import IdempotencyStore, Idempotent, IdempotentRequest
from ramparts.payments.psp import PspError, StripePsp
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from ramparts.problems import Problem, ProblemType
from ramparts.web.errors import install_error_handlers
from ramparts.web.middleware import RequestTransactionMiddleware
from tests.live import LiveServer, free_port
from tests.payments.test_idempotency import new_tenant

pytestmark = pytest.mark.anyio


class SignedIn:
    """Stands in for the bearer authenticator: the caller named by `X-Test-User` is signed in
    to `tenant`, and the request's tenant transaction is opened, as the permission gate does."""

    def __init__(self, app: ASGIApp, *, database: Database, tenant: uuid.UUID) -> None:
        self.app = app
        self.database = database
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            user = dict(scope["headers"]).get(b"x-test-user", b"user-1").decode()
            scope[PRINCIPAL_KEY] = Principal(
                subject=user,
                user_id=uuid.uuid5(uuid.NAMESPACE_URL, user),
                tenant_id=self.tenant,
                roles=("finance",),
                amr=("pwd", "otp"),
                acr="aal2",
                client_id="test",
                scope="openid",
                jti=uuid.uuid4(),
            )
            transaction = RequestTransaction.of(scope)
            assert transaction is not None
            await transaction.open(self.database, self.tenant)
        await self.app(scope, receive, send)


@pytest.fixture
def live(
    urls: DatabaseUrls, sandbox: Sandbox
) -> Iterator[tuple[httpx.Client, uuid.UUID, list[str]]]:
    tenant = new_tenant(urls)
    # Its own adapter: its connections belong to the server thread's event loop.
    psp = StripePsp.connect(SecretStr(SANDBOX_API_KEY), api_base=sandbox.api_base)
    calls: list[str] = []
    database = Database(urls.app, pool_size=30)
    idempotent = Idempotent(IdempotencyStore(wait=timedelta(seconds=20)))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # In the server's own event loop, where the connections were made.
        await psp.aclose()
        await database.dispose()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    async def charge(
        thing: str,
        body: dict[str, Any],
        # A default, not `Annotated`: a local dependency cannot be named in a string annotation.
        idem: IdempotentRequest = Depends(idempotent),  # noqa: B008
    ) -> Response:
        if (replayed := idem.replay) is not None:
            return replayed
        calls.append(thing)
        await asyncio.sleep(0.2)  # a slow PSP: duplicates arrive while this one runs
        try:
            intent = await psp.create_payment_intent(
                tenant,
                amount=int(body["amount"]),
                currency="eur",
                idempotency_key=idem.key,
                payment_method=body.get("payment_method"),
                confirm="payment_method" in body,
            )
        except PspError:
            raise Problem(402, ProblemType.INVALID_REQUEST, "the PSP refused") from None
        return await idem.respond(
            201, {"thing": thing, "psp_id": intent.id, "status": intent.status}
        )

    app.add_api_route("/things/{thing}/charge", charge, methods=["POST"])
    app.add_middleware(SignedIn, database=database, tenant=tenant)
    app.add_middleware(RequestTransactionMiddleware)
    server = LiveServer(app, free_port())
    with server as client:
        yield client, tenant, calls


async def test_duplicates_get_one_execution_and_the_same_bytes(
    live: tuple[httpx.Client, uuid.UUID, list[str]], buyer: stripe.StripeClient
) -> None:
    client, _, calls = live
    headers = {"Idempotency-Key": "charge-thing-1"}
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as concurrent:
        answers = await asyncio.gather(
            *(
                concurrent.post("/things/t1/charge", json={"amount": 2100}, headers=headers)
                for _ in range(20)
            )
        )
    assert {a.status_code for a in answers} == {201}, answers[0].text
    assert len({a.content for a in answers}) == 1
    assert calls == ["t1"]
    psp_id = answers[0].json()["psp_id"]
    assert buyer.v1.payment_intents.retrieve(psp_id).amount == 2100
    # Later, the same request: the stored bytes; the same JSON written otherwise is the same.
    again = client.post(
        "/things/t1/charge",
        content=b'{ "amount" : 2100 }',
        headers={**headers, "content-type": "application/json"},
    )
    assert (again.status_code, again.content) == (201, answers[0].content)
    assert again.headers["content-type"] == "application/json"
    assert calls == ["t1"]


def test_refusals(live: tuple[httpx.Client, uuid.UUID, list[str]]) -> None:
    client, _, calls = live
    missing = client.post("/things/t2/charge", json={"amount": 100})
    assert missing.status_code == 400
    assert missing.json()["type"] == "urn:ramparts:problem:idempotency-key-required"
    too_long = client.post(
        "/things/t2/charge", json={"amount": 100}, headers={"Idempotency-Key": "k" * 256}
    )
    assert too_long.status_code == 400
    headers = {"Idempotency-Key": "t2-key"}
    assert (
        client.post("/things/t2/charge", json={"amount": 100}, headers=headers).status_code == 201
    )
    for other in [
        client.post("/things/t2/charge", json={"amount": 101}, headers=headers),  # body
        client.post("/things/t3/charge", json={"amount": 100}, headers=headers),  # path
        client.post(  # caller
            "/things/t2/charge",
            json={"amount": 100},
            headers={**headers, "X-Test-User": "user-2"},
        ),
    ]:
        assert other.status_code == 422
        assert other.json()["type"] == "urn:ramparts:problem:idempotency-key-reused"
    assert calls == ["t2"]


def test_an_error_answer_leaves_the_key_free(
    live: tuple[httpx.Client, uuid.UUID, list[str]], buyer: stripe.StripeClient
) -> None:
    client, _, calls = live
    headers = {"Idempotency-Key": "t4-key"}
    # The PSP refuses (an unknown payment method; the sandbox declines test cards only late):
    # the route answers an error, its transaction rolls back and nothing is kept.
    refused = client.post(
        "/things/t4/charge", json={"amount": 100, "payment_method": "pm_nope"}, headers=headers
    )
    assert refused.status_code == 402
    retried = client.post("/things/t4/charge", json={"amount": 300}, headers=headers)
    assert retried.status_code == 201
    assert calls == ["t4", "t4"]
