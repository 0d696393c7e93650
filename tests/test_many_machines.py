"""Ramparts on many machines: API processes are stateless, everything shared is in PostgreSQL
(and Redis for the assistant's limits).

One PostgreSQL server and one Redis on loopback; four real `ramparts serve` processes, as four
machines behind a load balancer would run them (one public URL, one KMS), and two real
`ramparts worker` processes. Two of the servers reach PostgreSQL directly, two through
PgBouncer in transaction pooling mode (`RAMPARTS_DATABASE_POOLER=pgbouncer`); every test runs
over each pair (`route`), one demo tenant each, and shows across the pair's two processes:
sign-in (started on one, finished on the other), one payment per Idempotency-Key sent to both
at once, the assistant's per-user rate limit, the kill-switch within a second everywhere, a
signed PSP webhook delivered to both (and again) processed once by the two workers, two
tenants' reads interleaved, and at the end one intact audit chain per tenant.

Run alone with `pytest -m many_machines`.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from pydantic import SecretStr

from ramparts.apps import selected_apps
from ramparts.cli.common import audit_log, with_owner
from ramparts.cli.server import migrate_database
from ramparts.config import Settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.demo import seed_demo
from ramparts.payments.psp import API_KEY_SECRET
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox, register_webhook
from ramparts.payments.sandbox_service import WEBHOOK_ID
from tests.conftest import cli_env
from tests.identity.helpers import (
    bearer,
    code_from,
    csrf_of,
    current_code,
    demo_authorization,
)
from tests.live import free_port
from tests.payments.flows import VISA, book_intact, owner_query, wait_for
from tests.payments.helpers import card_payment_method
from tests.pgbouncer import Pool, pgbouncer
from tests.test_cli import RAMPARTS, run

pytestmark = [pytest.mark.many_machines, pytest.mark.pgbouncer, pytest.mark.timeout(240)]

REDIS = "redis://127.0.0.1:6379/0"
#: Where the load balancer in front of the servers would be: the issuer, and the only host
#: every server answers as (never resolved: the test reaches each server by its port).
PUBLIC_HOST = "ramparts.test"
PUBLIC_URL = f"http://{PUBLIC_HOST}"
#: The assistant's per-user rate in this test: small, so a burst across processes passes it.
USER_RATE = 4
#: The kill-switch's promise (`ramparts.ai.killswitch`): every process within a second.
KILLSWITCH_BOUND_SECONDS = 1.0
#: The pool of server connections PgBouncer keeps for both of its API processes.
PGBOUNCER_POOL = 10
#: Each API process's own connection budget (a good neighbour on the shared test server).
CONNECTIONS_PER_SERVER = "8"
ROUTES = {"direct": "acme", "pgbouncer": "globex"}


class WebhookCatcher:
    """Stands where the sandbox PSP delivers its events: keeps each signed delivery whole
    (body and `Stripe-Signature`), as it would reach the API, to be delivered by the test."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[bytes, str]] = []
        catcher = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                catcher.deliveries.append((body, self.headers.get("Stripe-Signature", "")))
                self.send_response(200)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/psp"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def event(self, event_type: str, psp_id: str) -> tuple[str, bytes, str]:
        """(event id, body, signature) of the delivered `event_type` about `psp_id`."""
        for body, signature in self.deliveries:
            document = json.loads(body)
            if document["type"] == event_type and document["data"]["object"]["id"] == psp_id:
                return document["id"], body, signature
        raise LookupError(event_type)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Process:
    """One `ramparts serve` or `ramparts worker` process, its output in `log`."""

    base: str  # where a server listens ("" for a worker)
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        """A client of this server, addressed as the load balancer forwards: to the public
        host, which every server answers as."""
        return httpx.Client(
            base_url=self.base, headers={"Host": PUBLIC_HOST, **(headers or {})}, timeout=30
        )


def _stop_all(processes: list[Process]) -> None:
    """SIGTERM to every process at once, then wait for each (a worker lets its job finish)."""
    for each in processes:
        each.process.terminate()
    for each in processes:
        try:
            each.process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            each.process.kill()
            each.process.wait()


@dataclass
class Cluster:
    urls: DatabaseUrls
    env: dict[str, str]
    report: dict[str, Any]
    sandbox: Sandbox
    webhooks: WebhookCatcher
    pairs: dict[str, tuple[Process, Process]]
    _tokens: dict[str, str] = field(default_factory=dict)
    _deposits: dict[str, list[httpx.Response]] = field(default_factory=dict)

    def tenant(self, route: str) -> uuid.UUID:
        slug = ROUTES[route]
        return uuid.UUID(next(t["id"] for t in self.report["tenants"] if t["slug"] == slug))

    def token(self, route: str, user: str, tenant: str | None = None) -> str:
        """An access token of `user@<tenant>.test`, signed in across the route's pair."""
        username = f"{user}@{tenant or ROUTES[route]}.test"
        if username not in self._tokens:
            self._tokens[username] = sign_in_across(self.pairs[route], self.report, username)
        return self._tokens[username]

    def deposit(self, route: str) -> list[httpx.Response]:
        """The accepted quote's deposit, requested with one Idempotency-Key twice on each
        process of the pair at the same moment (once per route, kept for every test)."""
        if route not in self._deposits:
            headers = bearer(self.token(route, "finance"))
            first, second = self.pairs[route]
            with first.client(headers) as client:
                quotes = client.get("/api/quotes").json()["items"]
            accepted = next(q for q in quotes if q["status"] == "accepted")
            keyed = {"Idempotency-Key": f"deposit-{uuid.uuid4()}", **headers}

            def request(server: Process) -> httpx.Response:
                with server.client(keyed) as client:
                    return client.post(f"/api/quotes/{accepted['id']}/deposit", json={})

            with ThreadPoolExecutor(4) as pool:
                self._deposits[route] = list(pool.map(request, [first, second] * 2))
        return self._deposits[route]


def sign_in_across(pair: tuple[Process, Process], report: dict[str, Any], username: str) -> str:
    """Sign `username` in as a person would (password, TOTP, PKCE code), the flow started on
    the first process and finished on the second: the flow's state is the database's."""
    user = next(u for u in report["users"] if u["username"] == username)
    client = report["oidc_client"]
    authorize, verifier = demo_authorization(report)
    first, second = pair
    with first.client() as browser:
        assert browser.get(authorize).status_code == 303
        password = browser.post(
            "/login",
            data={
                "tenant": user["tenant"],
                "username": username,
                "password": user["password"],
                "csrf": csrf_of(browser.get("/login")),
            },
        )
        assert password.status_code == 303, password.text
        browser.base_url = httpx.URL(second.base)  # the same browser, the other machine
        mfa = csrf_of(browser.get("/login/mfa"))
        final = browser.post(
            "/login/mfa", data={"otp": current_code(user["totp_secret"]), "csrf": mfa}
        )
        assert final.status_code == 303, final.text
        tokens = browser.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code_from(final.headers["location"]),
                "redirect_uri": client["redirect_uri"],
                "client_id": client["client_id"],
                "code_verifier": verifier,
            },
        )
    assert tokens.status_code == 200, tokens.text
    token: str = tokens.json()["access_token"]
    return token


def _start(home: Path, env: dict[str, str], name: str, *args: str) -> Process:
    log = home / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([RAMPARTS, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args[args.index('--port') + 1]}" if "--port" in args else ""
    return Process(base, process, log)


def _ready(process: Process) -> bool:
    assert process.process.poll() is None, process.output()
    if not process.base:
        return "worker_started" in process.output()
    try:
        return httpx.get(f"{process.base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _prepare(settings: Settings, urls: DatabaseUrls) -> dict[str, Any]:
    """What `ramparts migrate` and `ramparts seed-demo --json` do, by the same functions, in
    this process (each CLI start costs seconds of the shared machine's cores)."""
    migrate_database(settings, urls)
    kms = open_kms(settings)
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))

    async def seed(owner: Database) -> dict[str, Any]:
        audit = audit_log(settings, owner, kms)
        return await seed_demo(
            owner, kms, audit, public_url=PUBLIC_URL, apps=selected_apps(settings.apps)
        )

    return asyncio.run(with_owner(urls, seed))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, make_database: Callable[..., DatabaseUrls]
) -> Iterator[Cluster]:
    began = time.monotonic()
    home = tmp_path_factory.mktemp("many-machines")
    urls = make_database(migrate=False)
    passphrase = secrets.token_urlsafe(24)
    report = _prepare(
        Settings(
            home=home,
            database_url=SecretStr(libpq(urls.owner)),
            public_url=PUBLIC_URL,
            kms_passphrase=SecretStr(passphrase),
        ),
        urls,
    )
    with ExitStack() as stack:
        sandbox = stack.enter_context(Sandbox())
        # What every machine shares: the public URL, Redis, the PSP, the KMS (a keystore on
        # this one machine; Vault on many), the server secret, and the settings.
        shared = {
            "RAMPARTS_PUBLIC_URL": PUBLIC_URL,
            "RAMPARTS_REDIS_URL": REDIS,
            "RAMPARTS_PSP_API_BASE": sandbox.api_base,
            "RAMPARTS_KMS_PASSPHRASE": passphrase,
            "RAMPARTS_SECRET_KEY": secrets.token_urlsafe(32),
            "RAMPARTS_AI_USER_RATE": f"{USER_RATE}/minute",
            "RAMPARTS_DB_MAX_CONNECTIONS": CONNECTIONS_PER_SERVER,
        }
        direct = cli_env(home, RAMPARTS_DATABASE_URL=libpq(urls.owner), **shared)
        database = urls.owner.database
        assert database is not None
        bouncer = stack.enter_context(
            pgbouncer(home / "pgbouncer", urls.owner, [Pool(database, database, PGBOUNCER_POOL)])
        )
        pooled = cli_env(
            home,
            RAMPARTS_APP_DATABASE_URL=libpq(bouncer.url(database)),
            RAMPARTS_DATABASE_POOLER="pgbouncer",
            **shared,
        )
        serve = ("serve", "--workers", "1", "--port")
        processes = [
            _start(home, direct, "serve-a", *serve, str(free_port())),
            _start(home, direct, "serve-b", *serve, str(free_port())),
            _start(home, pooled, "serve-c", *serve, str(free_port())),
            _start(home, pooled, "serve-d", *serve, str(free_port())),
            _start(home, direct, "worker-1", "worker"),
            _start(home, direct, "worker-2", "worker"),
        ]
        stack.callback(_stop_all, processes)
        for process in processes:
            wait_for(lambda p=process: _ready(p), within=90, what=f"{process.log.stem} ready")
        # Every server registered itself with the sandbox as it started; the sandbox's events
        # now come to the test, which delivers them to the servers as it pleases.
        webhooks = WebhookCatcher()
        stack.callback(webhooks.close)
        register_webhook(sandbox.api_base, WEBHOOK_ID, webhooks.url, report["webhook_secret"])
        print(f"\nmany machines: started in {time.monotonic() - began:.1f} s")
        yield Cluster(
            urls,
            direct,
            report,
            sandbox,
            webhooks,
            {"direct": (processes[0], processes[1]), "pgbouncer": (processes[2], processes[3])},
        )


@pytest.fixture(params=sorted(ROUTES))
def route(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_one_idempotency_key_sent_to_both_processes_runs_once(cluster: Cluster, route: str) -> None:
    answers = cluster.deposit(route)
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert all(body == bodies[0] for body in bodies)  # the replays answer as the first did
    payment = bodies[0]
    rows = owner_query(
        cluster.urls,
        "SELECT id FROM payments WHERE tenant_id = %s AND subject = %s",
        cluster.tenant(route),
        payment["quote_id"],
    )
    assert [str(row[0]) for row in rows] == [payment["id"]]
    headers = bearer(cluster.token(route, "finance"))
    for server in cluster.pairs[route]:
        with server.client(headers) as client:
            listed = client.get("/api/payments", params={"quote_id": payment["quote_id"]})
        assert [p["id"] for p in listed.json()["items"]] == [payment["id"]]


def test_the_assistant_rate_limit_holds_across_processes(cluster: Cluster, route: str) -> None:
    headers = bearer(cluster.token(route, "seller"))
    first, second = cluster.pairs[route]

    def ask(server: Process) -> httpx.Response:
        with server.client(headers) as client:
            return client.post("/api/assistant", json={"message": "Which quotes are open?"})

    # Twice the limit, half to each process, all at once: each process alone would be within
    # it; together, exactly the limit is admitted.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, [first, second] * USER_RATE))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * USER_RATE + [429] * USER_RATE, [a.text for a in answers]
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.headers["content-type"] == "application/problem+json" for a in refused)
    # And still refused by either, afterwards.
    assert [ask(server).status_code for server in (first, second)] == [429, 429]


def _tools_status(server: Process, headers: dict[str, str]) -> int:
    with server.client(headers) as client:
        return client.get("/api/assistant/tools").status_code


def _until_every(
    servers: tuple[Process, Process], headers: dict[str, str], status: int, since: float
) -> list[float]:
    """Seconds from `since` until each server answers the tools list with `status`."""
    reached: dict[int, float] = {}
    while len(reached) < len(servers):
        for n, server in enumerate(servers):
            if n not in reached and _tools_status(server, headers) == status:
                reached[n] = time.monotonic() - since
        assert time.monotonic() - since < 5 * KILLSWITCH_BOUND_SECONDS, reached
    return [reached[n] for n in range(len(servers))]


def _switch(server: Process, admin: dict[str, str], *, engaged: bool) -> float:
    """Throw the tenant's switch through `server`; when its answer came back."""
    with server.client(admin) as client:
        answer = client.post(
            "/api/assistant/killswitch", json={"engaged": engaged, "reason": "many machines"}
        )
    assert answer.status_code == 200, answer.text
    return time.monotonic()


def test_the_kill_switch_stops_every_process_within_a_second(cluster: Cluster, route: str) -> None:
    admin = bearer(cluster.token(route, "admin"))
    buyer = bearer(cluster.token(route, "buyer"))
    pair = cluster.pairs[route]
    # Each process has just read the switch (off): its next read is up to its cache's age away.
    assert [_tools_status(server, buyer) for server in pair] == [200, 200]
    off = _until_every(pair, buyer, 503, _switch(pair[0], admin, engaged=True))
    print(f"\nkill-switch on ({route}): refused after {off[0]:.3f} s and {off[1]:.3f} s")
    assert max(off) < KILLSWITCH_BOUND_SECONDS
    for server in pair:
        with server.client(buyer) as client:
            refused = client.post("/api/assistant", json={"message": "Charge the deposit"})
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("ai-disabled")
    on = _until_every(pair, buyer, 200, _switch(pair[1], admin, engaged=False))
    print(f"kill-switch off ({route}): served after {on[0]:.3f} s and {on[1]:.3f} s")
    assert max(on) < KILLSWITCH_BOUND_SECONDS


def test_a_signed_webhook_delivered_to_both_is_processed_once(cluster: Cluster, route: str) -> None:
    payment = cluster.deposit(route)[0].json()
    # Two workers share the queue.
    assert owner_query(cluster.urls, "SELECT count(*) FROM procrastinate_workers") == [(2,)]
    # The payer pays at the PSP, as Stripe.js does from their browser; the PSP then signs its
    # event (the catcher keeps it whole).
    payer = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": cluster.sandbox.api_base})
    method = card_payment_method(payer, VISA)
    # (The sandbox confirms only with the method already set, as the adapter does.)
    payer.v1.payment_intents.update(payment["psp_id"], params={"payment_method": method})
    paid = payer.v1.payment_intents.confirm(payment["psp_id"])
    assert paid.status == "succeeded"
    wait_for(
        lambda: _caught(cluster, payment["psp_id"]),
        within=15,
        what="the sandbox's payment_intent.succeeded",
    )
    event_id, body, signature = cluster.webhooks.event(
        "payment_intent.succeeded", payment["psp_id"]
    )
    headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
    first, second = cluster.pairs[route]

    def deliver(server: Process) -> int:
        with server.client(headers) as client:
            return client.post("/webhooks/psp", content=body).status_code

    with ThreadPoolExecutor(4) as pool:  # at once, twice to each process
        delivered = list(pool.map(deliver, [first, second] * 2))
    assert delivered == [200] * 4, first.output()[-3000:] + second.output()[-3000:]
    wait_for(lambda: _processed(cluster, event_id), within=30, what="the event processed")
    assert [deliver(server) for server in (first, second)] == [200, 200]  # re-delivered late
    time.sleep(1)  # a job a late delivery wrongly deferred would have run by now
    assert owner_query(
        cluster.urls, "SELECT count(*), min(state) FROM psp_events WHERE event_id = %s", event_id
    ) == [(1, "processed")]
    assert owner_query(
        cluster.urls,
        "SELECT status::text FROM procrastinate_jobs WHERE lock = %s",
        f"psp_event:{event_id}",
    ) == [("succeeded",)]
    assert owner_query(
        cluster.urls,
        "SELECT status, confirmed_by_event FROM payments WHERE id = %s",
        payment["id"],
    ) == [("succeeded", event_id)]
    entries = owner_query(
        cluster.urls,
        "SELECT kind, count(*) FROM ledger_entries WHERE payment = %s GROUP BY kind",
        payment["id"],
    )
    assert len(entries) == 1
    assert entries[0][1] == 1  # the deposit is in the books once
    assert book_intact(cluster.urls, cluster.tenant(route))


def _caught(cluster: Cluster, psp_id: str) -> bool:
    try:
        cluster.webhooks.event("payment_intent.succeeded", psp_id)
    except LookupError:
        return False
    return True


def _processed(cluster: Cluster, event_id: str) -> bool:
    return owner_query(
        cluster.urls, "SELECT state FROM psp_events WHERE event_id = %s", event_id
    ) == [("processed",)]


def test_two_tenants_interleaved_across_processes_see_only_their_own(
    cluster: Cluster, route: str
) -> None:
    pair = cluster.pairs[route]
    tenants = ("acme", "globex")
    readers = [bearer(cluster.token(route, "buyer", tenant)) for tenant in tenants]
    owned = {
        tenant: {
            str(row[0])
            for row in owner_query(
                cluster.urls,
                "SELECT q.id FROM quotes q JOIN tenants t ON t.id = q.tenant_id WHERE t.slug = %s",
                tenant,
            )
        }
        for tenant in tenants
    }

    def read(n: int) -> tuple[str, set[str]]:
        with pair[n // 2 % 2].client(readers[n % 2]) as client:
            answer = client.get("/api/quotes")
        assert answer.status_code == 200, answer.text
        return tenants[n % 2], {quote["id"] for quote in answer.json()["items"]}

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(read, range(32)))
    for tenant, ids in seen:
        assert ids
        assert ids <= owned[tenant]


def test_every_audit_chain_is_intact_after_both_processes_wrote(cluster: Cluster) -> None:
    """Last: every event the tests above caused, through four processes, in one chain per
    tenant, verified by `ramparts audit verify`."""
    for route in ROUTES:
        cluster.token(route, "buyer")  # at least a sign-in through each pair
    wait_for(
        lambda: owner_query(cluster.urls, "SELECT count(*) FROM audit_queue") == [(0,)],
        within=10,
        what="every queued audit event chained",
    )
    verified = run("audit", "verify", "--json", env=cluster.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["intact"] is True
    chains = {chain["tenant"]: chain for chain in report["chains"]}
    for route in ROUTES:
        chain = chains[str(cluster.tenant(route))]
        assert chain["intact"] is True
        assert chain["events"] > 0
        assert chain["queued"] == 0
