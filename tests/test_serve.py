"""`ramparts serve` in several worker processes, and the pools sized to the server's limit."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.runtime import (
    MIN_CONNECTIONS_PER_WORKER,
    ServerConnections,
    ServeSizingError,
    server_connections,
    size_pools,
)
from tests.conftest import free_port, libpq
from tests.identity.helpers import bearer, sign_in_demo_buyer
from tests.test_cli import owner_env, run, running

REDIS = "redis://127.0.0.1:6379/0"


def test_pools_fit_the_servers_max_connections(urls: DatabaseUrls) -> None:
    async def read() -> ServerConnections:
        database = Database(urls.app, pool_size=1, max_overflow=0)
        try:
            return await server_connections(database)
        finally:
            await database.dispose()

    server = asyncio.run(read())
    with psycopg.connect(libpq(urls.owner)) as conn:
        shown = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        reserved = int(conn.execute("SHOW superuser_reserved_connections").fetchone()[0])  # type: ignore[index]
    assert server == ServerConnections(shown, reserved)
    most_workers = min(8, server.usable // 2 // MIN_CONNECTIONS_PER_WORKER)
    for workers in range(1, most_workers + 1):
        sizing = size_pools(workers, server)
        assert sizing.budget == server.usable // 2  # the default share
        assert sizing.most <= sizing.budget
        assert sizing.app.most >= 2
        assert sizing.audit.most >= 1
    one = size_pools(1, server, budget=60)
    # Every connection opened is kept: no overflow closed after each use.
    assert (one.app.size, one.app.overflow, one.audit.size, one.audit.overflow) == (15, 0, 12, 0)
    two = size_pools(2, server, budget=24)  # 12 each: a fifth for the audit pool
    assert (two.app.size, two.app.overflow, two.audit.size, two.audit.overflow) == (10, 0, 2, 0)
    assert two.most == 24
    least = size_pools(4, server, budget=4 * MIN_CONNECTIONS_PER_WORKER)
    assert (least.app.most, least.audit.most) == (2, 1)


def test_pools_refuse_a_budget_that_cannot_go_round() -> None:
    server = ServerConnections(max_connections=100, reserved=3)
    with pytest.raises(ServeSizingError) as short:
        size_pools(4, server, budget=11)
    assert str(short.value) == (
        "4 worker(s) need at least 12 database connections (3 each); this instance may use 11 "
        "of the server's 97 usable connections (max_connections 100 - 3 reserved) "
        "(set RAMPARTS_DB_MAX_CONNECTIONS or fewer --workers)"
    )
    with pytest.raises(ServeSizingError) as over:
        size_pools(1, server, budget=98)
    assert str(over.value) == (
        "RAMPARTS_DB_MAX_CONNECTIONS=98 is more than "
        "the server's 97 usable connections (max_connections 100 - 3 reserved)"
    )
    with pytest.raises(ServeSizingError):
        size_pools(33, server)  # the default share, 48, gives 33 workers one connection each


def test_serve_refuses_a_budget_too_small_for_its_workers(
    tmp_path: Path, urls: DatabaseUrls
) -> None:
    env = owner_env(tmp_path, urls, RAMPARTS_REDIS_URL=REDIS, RAMPARTS_DB_MAX_CONNECTIONS="5")
    result = run("serve", "--port", str(free_port()), "--workers", "2", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "ramparts: error: 2 worker(s) need at least 6 database connections (3 each); "
        "this instance may use 5 of the server's"
    )


def _worker_processes(server: psutil.Process) -> list[psutil.Process]:
    return [
        child
        for child in server.children(recursive=True)
        if any("spawn_main" in part for part in child.cmdline())
    ]


def _accepted_by(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for conn in worker.net_connections(kind="tcp")
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def _seeded_with_redis(
    home: Path, make_database: Callable[..., DatabaseUrls]
) -> tuple[int, str, dict[str, str], dict[str, Any]]:
    """A migrated, seeded database with shared limits: a free port, its URL, the owner's
    environment and the `seed-demo --json` report."""
    urls = make_database(migrate=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = owner_env(home, urls, RAMPARTS_PUBLIC_URL=base, RAMPARTS_REDIS_URL=REDIS)
    assert run("migrate", env=env).returncode == 0
    seeded = run("seed-demo", "--json", env=env)
    assert seeded.returncode == 0, seeded.stderr
    return port, base, env, json.loads(seeded.stdout)


def test_two_workers_serve_authenticated_requests(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    port, base, env, report = _seeded_with_redis(tmp_path, make_database)
    with running("serve", "--port", str(port), "--workers", "2", env=env, url=f"{base}/readyz") as (
        started
    ):
        workers = _worker_processes(psutil.Process(started.process.pid))
        assert len(workers) == 2
        with httpx.Client(base_url=base) as browser:
            tokens = sign_in_demo_buyer(browser, report)
        assert tokens.status_code == 200, tokens.text
        headers = bearer(tokens.json()["access_token"])
        # Each client keeps its connection open, so the worker that accepted it stays visible.
        clients = [httpx.Client(base_url=base, headers=headers) for _ in range(24)]
        try:
            for _ in range(5):
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(lambda c: c.get("/api/quotes"), clients))
                assert [a.status_code for a in answers] == [200] * len(clients)
                # The buyer's three demo quotes, to every client.
                assert all(len(a.json()["items"]) == 3 for a in answers)
                if all(_accepted_by(worker, port) for worker in workers):
                    break
                clients += [httpx.Client(base_url=base, headers=headers) for _ in range(8)]
            assert [_accepted_by(worker, port) > 0 for worker in workers] == [True, True]
        finally:
            for each in clients:
                each.close()
    logged = re.sub(r"\x1b\[[0-9;]*m", "", started.output)  # the dev log's colours
    assert "serve_sizing" in logged
    assert "workers=2" in logged


def test_two_workers_log_json_without_secrets_and_report_the_whole_instance_metrics(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    """Stage profile, two workers: every line on stderr is JSON, each request's line names
    its route template, ids and timing and no secret it carried, and /metrics from whichever
    worker answers counts every worker's requests."""
    port, base, env, report = _seeded_with_redis(tmp_path, make_database)
    buyer = next(u for u in report["users"] if u["username"] == "buyer@acme.test")
    stage = {**env, "RAMPARTS_PROFILE": "stage"}
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"  # pragma: allowlist secret
    serve = ("serve", "--port", str(port), "--workers", "2")
    with running(*serve, env=stage, url=f"{base}/readyz") as started:
        workers = _worker_processes(psutil.Process(started.process.pid))
        with httpx.Client(base_url=base) as browser:
            tokens = sign_in_demo_buyer(browser, report)
        assert tokens.status_code == 200, tokens.text
        token = tokens.json()["access_token"]
        with httpx.Client(base_url=base, headers=bearer(token)) as api:
            traced = api.get(
                "/api/quotes",
                headers={
                    "x-request-id": "checkout-7f3a9c21",
                    "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                },
            )
            assert traced.status_code == 200
            assert traced.headers["x-request-id"] == "checkout-7f3a9c21"
            # Secrets in the query, a cookie, an id that is an address, a card in the body.
            leaky = api.get(
                f"/api/quotes?access_token={token}&email=buyer@acme.test",
                headers={"cookie": f"rp_session={token}", "x-request-id": "buyer@acme.test"},
            )
            assert leaky.headers["x-request-id"] != "buyer@acme.test"
            carded = api.post("/api/quotes", json={"note": "pay with 4111 1111 1111 1111"})
            assert carded.status_code == 400
        # Fresh connections, until both workers have served some (each then has its file).
        checks, pids = 0, {worker.pid for worker in workers}
        for _ in range(10):
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: httpx.get(f"{base}/healthz"), range(16)))
            assert [a.status_code for a in answers] == [200] * 16
            checks += 16
            if _counted_by(tmp_path / "metrics") == pids:
                break
        scrapes = [httpx.get(f"{base}/metrics") for _ in range(4)]
    assert _counted_by(tmp_path / "metrics") == pids
    for scrape in scrapes:
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        assert _sample(scrape.text, "ramparts_http_requests_total", route="/healthz") == checks
        assert _sample(scrape.text, "ramparts_http_requests_total", route="/api/quotes") == 2
        # The card was refused at the edge, before any route was matched.
        refused = {"route": "unmatched", "method": "POST", "status": "4xx"}
        assert _sample(scrape.text, "ramparts_http_requests_total", **refused) == 1
        assert _sample(scrape.text, "ramparts_approvals_pending") == 0
        assert _sample(scrape.text, "ramparts_operations_gauges_up") == 1

    lines = [json.loads(line) for line in started.output.splitlines()]  # every line is JSON
    requests = [line for line in lines if line["event"] == "request"]
    assert {line["route"] for line in requests} >= {"/api/quotes", "/healthz", "/oauth/token"}
    ours = next(line for line in requests if line["request_id"] == "checkout-7f3a9c21")
    assert ours["trace_id"] == trace
    assert (ours["method"], ours["status"]) == ("GET", 200)
    assert ours["duration_ms"] > 0
    assert all(
        re.fullmatch(r"[0-9a-f]{32}", line["trace_id"]) and line["request_id"] for line in requests
    )
    assert any(line.get("logger") == "uvicorn.error" for line in lines)  # the server's own
    # The card in any spelling (its first four digits alone also occur in timestamps).
    card = ("4111 1111 1111 1111", "4111111111111111", "1111 1111 1111")
    for secret in (token, buyer["password"], buyer["totp_secret"], "buyer@acme.test", *card):
        assert secret not in started.output


def _counted_by(samples: Path) -> set[int]:
    """The processes that have counted something in multiprocess mode (`counter_<pid>.db`)."""
    return {int(f.stem.rsplit("_", 1)[1]) for f in samples.glob("counter_*.db")}


def _sample(exposition: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
