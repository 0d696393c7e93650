"""The whole-app load benchmark (issue 13): `ramparts serve` against a bare FastAPI app.

A throwaway database is migrated and seeded through the real CLI (`migrate`, `seed-demo`) plus
`QuoteService` (each demo buyer then has 20 quotes of 3 items); `ramparts serve` runs as a
subprocess (real workers, loopback port) and hands out access tokens through the real sign-in
(password, TOTP, code exchange with PKCE; later ones by refresh). The baseline, `bare_app.py`,
serves the same quote reads and writes with no authentication, authorization, row-level
security or audit, under uvicorn with the same server settings (workers, uvloop, httptools,
pool size). `wrk` (Debian's, installed when missing) drives both with `api.lua`.

Each measure runs its pair interleaved (bare, app, bare, app), each run after a warm-up, and
reports req/s, p50 and p99 and the ratios app/bare and one tenant/two tenants. Goals are
printed beside the results, not enforced: the exit status reflects errors (a non-2xx answer,
a socket error, a server that does not start), unless `--check` also makes a missed goal
fail. `--quick` is the CI smoke run; `--soak` loads the app alone for `--minutes`, sampling
throughput and the server's memory (RSS of all its processes) every minute. `--floor` reads
through two more baselines (`floor_app.py`): the bare app plus the database work an audited
read cannot skip, with and without its audit event, to show how much of the gap is the
database's and how much the app's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import psutil
import pyotp
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.identity.models import User
from ramparts.quotes.models import Sensitivity
from ramparts.quotes.services import LineItem, QuoteService
from ramparts.runtime import Sizing, server_connections, size_pools, usable_cores

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RAMPARTS = str(Path(sys.executable).with_name("ramparts"))
QUOTES_PER_BUYER = 20
TENANTS = ("acme", "globex")  # the demo's two tenants; their `buyer` signs in
NEW_QUOTE = {
    "title": "Standing desks",
    "currency": "EUR",
    "items": [{"description": "Standing desk", "quantity": 4, "unit_price_minor": 49_900}],
}
GOALS = {
    "read throughput app/bare": ">= 0.85",
    "read p99 app/bare": "<= 1.5",
    "read one tenant/two tenants": ">= 0.9",
    "soak throughput drift": "<= 10 %",
    "soak RSS growth": "<= 10 %",
}
WRK_JSON = re.compile(r"^WRK-JSON (\{.*\})$", re.MULTILINE)


class BenchError(Exception):
    """Something failed: the run is worthless (exit 1)."""


# Setup ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk from Debian, installed when missing."""
    found = shutil.which("wrk")
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed and apt-get could not install it")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_url(stack: ExitStack) -> str:
    """Workers share the assistant's limits through Redis: a private redis-server when one
    is installed, else the one at 127.0.0.1:6379."""
    server = shutil.which("redis-server")
    if server is not None:
        port = free_port()
        process = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(stop, process)
        wait_for_port(port, process, "redis-server")
        return f"redis://127.0.0.1:{port}/0"
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        raise BenchError("more than one worker needs Redis: install redis-server") from None
    return "redis://127.0.0.1:6379/0"


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise BenchError(f"{name} did not listen on {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Buyer:
    tenant: str
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    password: str
    totp_secret: str


def cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([RAMPARTS, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise BenchError(f"ramparts {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def seed(urls: DatabaseUrls, env: dict[str, str]) -> tuple[list[Buyer], str]:
    """The demo data through the CLI, then quotes enough for each buyer; returns the buyers
    and the first-party client's redirect URI."""
    cli("migrate", env=env)
    report = json.loads(cli("seed-demo", "--json", env=env))
    ids = {t["slug"]: uuid.UUID(t["id"]) for t in report["tenants"]}
    users = {u["username"]: u for u in report["users"]}

    async def more_quotes() -> list[Buyer]:
        owner = Database(urls.owner, pool_size=1)
        buyers = []
        try:
            for slug in TENANTS:
                user = users[f"buyer@{slug}.test"]
                async with owner.tenant_session(ids[slug]) as session:
                    user_id = await session.scalar(
                        select(User.id).where(
                            User.tenant_id == ids[slug], User.username == user["username"]
                        )
                    )
                    if user_id is None:
                        raise BenchError(f"demo buyer {user['username']} missing")
                    quotes = QuoteService(session)
                    have = len(await quotes.listing(ids[slug], limit=1000))
                    for n in range(QUOTES_PER_BUYER - 2):  # the demo gave the buyer two
                        await quotes.create(
                            tenant_id=ids[slug],
                            buyer_id=user_id,
                            title=f"Bench request {have + n}",
                            currency="EUR",
                            sensitivity=Sensitivity.INTERNAL,
                            items=[
                                LineItem("Monitor", 2, 21_900),
                                LineItem("Docking station", 2, 17_500),
                                LineItem("Delivery", 1, 2_500),
                            ],
                        )
                buyers.append(
                    Buyer(
                        slug,
                        ids[slug],
                        user_id,
                        user["username"],
                        user["password"],
                        user["totp_secret"],
                    )
                )
        finally:
            await owner.dispose()
        return buyers

    return asyncio.run(more_quotes()), report["oidc_client"]["redirect_uri"]


# Servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    def rss(self) -> int:
        """Resident memory of the server and every process under it, in bytes."""
        parent = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])

    def ready(self, within: float = 120) -> None:
        """Wait until it answers /healthz; raise with its log's tail if it dies or is late."""
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer within {within} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextmanager
def started(
    name: str, command: list[str], env: dict[str, str], port: int, log: Path
) -> Iterator[Server]:
    """The server launched (not yet ready: see `Server.ready`), stopped on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Server(name, process, f"http://127.0.0.1:{port}", log)
    finally:
        stop(process)


def server_env(work: Path, urls: DatabaseUrls, port: int) -> tuple[dict[str, str], dict[str, str]]:
    """The environment without any RAMPARTS_* setting (for a baseline), and the one
    `ramparts serve` and the CLI run with: its home under `work`, the owner's database URL."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    path = os.pathsep.join([str(HERE), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return base_env, {
        **base_env,
        "PYTHONPATH": path.rstrip(os.pathsep),
        "RAMPARTS_HOME": str(work / "home"),
        "XDG_CONFIG_HOME": str(work / "config"),
        "RAMPARTS_DATABASE_URL": libpq(urls.owner),
        "RAMPARTS_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }


def serve_app(
    env: dict[str, str], port: int, workers: int, log: Path
) -> AbstractContextManager[Server]:
    command = [RAMPARTS, "serve", "--host", "127.0.0.1", "--port", str(port)]
    return started("ramparts serve", [*command, "--workers", str(workers)], env, port, log)


def serve_bare(
    env: dict[str, str],
    port: int,
    workers: int,
    log: Path,
    *,
    name: str = "bare app",
    module: str = "bare_app",
) -> AbstractContextManager[Server]:
    """`module`'s app (`bare_app.py`, or `floor_app.py`) with the same server settings as
    `ramparts serve` (see `runtime.serve`)."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"{module}:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "on",
        "--no-access-log",
        "--no-server-header",
        "--no-proxy-headers",
    ]
    return started(name, command, env, port, log)


# Tokens -----------------------------------------------------------------------------------


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    if match is None:
        raise BenchError(f"no csrf field in {page.request.url} ({page.status_code})")
    return match.group(1)


def _expect(response: httpx.Response, status: int, step: str) -> httpx.Response:
    if response.status_code != status:
        raise BenchError(f"sign-in, {step}: {response.status_code} {response.text[:300]}")
    return response


def sign_in(base: str, buyer: Buyer, redirect_uri: str, client_id: str = "ramparts-web") -> str:
    """The browser's sign-in (authorize, password, TOTP, code + PKCE exchange): a refresh
    token, from which `access_token` takes fresh access tokens."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
    )
    with httpx.Client(base_url=base, timeout=30) as browser:
        _expect(browser.get(f"/oauth/authorize?{query}"), 303, "authorize")
        form = {
            "tenant": buyer.tenant,
            "username": buyer.username,
            "password": buyer.password,
            "csrf": _csrf(browser.get("/login")),
        }
        _expect(browser.post("/login", data=form), 303, "password")
        otp = {"otp": pyotp.TOTP(buyer.totp_secret).now(), "csrf": _csrf(browser.get("/login/mfa"))}
        final = _expect(browser.post("/login/mfa", data=otp), 303, "second factor")
        code = parse_qs(urlsplit(final.headers["location"]).query)["code"][0]
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        tokens = _expect(browser.post("/oauth/token", data=exchange), 200, "code exchange")
    refresh: str = tokens.json()["refresh_token"]
    return refresh


class Tokens:
    """Each buyer's refresh token, rotated on every use to take a fresh access token."""

    def __init__(self, base: str, buyers: list[Buyer], redirect_uri: str) -> None:
        self._base = base
        self._refresh = {b.tenant: sign_in(base, b, redirect_uri) for b in buyers}

    def fresh(self, tenant: str, client_id: str = "ramparts-web") -> str:
        grant = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh[tenant],
            "client_id": client_id,
        }
        answer = _expect(httpx.post(f"{self._base}/oauth/token", data=grant), 200, "refresh")
        self._refresh[tenant] = answer.json()["refresh_token"]
        access: str = answer.json()["access_token"]
        return access


# Load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk(
    binary: str,
    url: str,
    tokens: Path,
    *,
    method: str,
    body: Path | None,
    connections: int,
    seconds: int,
) -> Result:
    command = [
        binary,
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "api.lua"),
        url,
        "--",
        str(tokens),
        method,
        *([str(body)] if body else []),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    found = WRK_JSON.search(done.stdout)
    if done.returncode or found is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    out = json.loads(found.group(1))
    if out["non_2xx"] or out["socket_errors"]:
        raise BenchError(
            f"{method} {url}: {out['non_2xx']} non-2xx answers, "
            f"{out['socket_errors']} socket errors out of {out['requests']}"
        )
    if not out["requests"]:
        raise BenchError(f"{method} {url}: no request completed")
    return Result(
        out["requests"], out["duration_us"] / 1e6, out["p50_us"] / 1e3, out["p99_us"] / 1e3
    )


@dataclass(frozen=True)
class Measure:
    operation: str  # read | write
    tenants: int
    connections: int

    @property
    def name(self) -> str:
        return f"{self.operation} {self.tenants}t c{self.connections}"


def summary(results: list[Result]) -> dict[str, float]:
    return {
        "rps": round(statistics.fmean(r.rps for r in results), 1),
        "p50_ms": round(statistics.fmean(r.p50_ms for r in results), 2),
        "p99_ms": round(statistics.fmean(r.p99_ms for r in results), 2),
    }


class Bench:
    def __init__(self, work: Path, binary: str, app: Server, bare: Server, tokens: Tokens) -> None:
        self.work, self.binary, self.app, self.bare, self.tokens = work, binary, app, bare, tokens
        self.body = work / "quote.json"
        self.body.write_text(json.dumps(NEW_QUOTE))

    def token_file(self, server: Server, buyers: list[Buyer]) -> Path:
        """Fresh access tokens for the app; for the bare app, the callers it trusts."""
        path = self.work / f"tokens-{server.name.replace(' ', '-')}"
        if server is self.app:
            lines = [self.tokens.fresh(b.tenant) for b in buyers]
        else:
            lines = [f"{b.tenant_id}:{b.user_id}" for b in buyers]
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(
        self, server: Server, buyers: list[Buyer], measure: Measure, seconds: int, warmup: int
    ) -> Result:
        tokens = self.token_file(server, buyers)
        method = "GET" if measure.operation == "read" else "POST"
        body = self.body if method == "POST" else None
        url = f"{server.base}/api/quotes"
        runs = (warmup, seconds) if warmup else (seconds,)
        for length in runs:  # the warm-up's result is dropped
            result = wrk(
                self.binary,
                url,
                tokens,
                method=method,
                body=body,
                connections=measure.connections,
                seconds=length,
            )
        return result


def compare(
    bench: Bench,
    buyers: list[Buyer],
    measures: list[Measure],
    *,
    rounds: int,
    seconds: int,
    warmup: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for measure in measures:
        group = buyers[: measure.tenants]
        bare: list[Result] = []
        app: list[Result] = []
        for _ in range(rounds):  # interleaved: drift touches both alike
            bare.append(bench.run(bench.bare, group, measure, seconds, warmup))
            app.append(bench.run(bench.app, group, measure, seconds, warmup))
        results[measure.name] = {"bare": summary(bare), "app": summary(app)}
        entry = results[measure.name]
        entry["throughput app/bare"] = round(entry["app"]["rps"] / entry["bare"]["rps"], 3)
        entry["p99 app/bare"] = round(entry["app"]["p99_ms"] / entry["bare"]["p99_ms"], 3)
        print_progress(measure.name, entry)
    for measure in measures:
        if measure.tenants == 1:
            two = results.get(Measure(measure.operation, 2, measure.connections).name)
            if two is not None:
                one_rps = results[measure.name]["app"]["rps"]
                results[measure.name]["one tenant/two tenants"] = round(
                    one_rps / two["app"]["rps"], 3
                )
    return results


def compare_floors(
    bench: Bench, floors: list[Server], buyers: list[Buyer], *, seconds: int, warmup: int
) -> dict[str, Any]:
    """Authenticated reads of one tenant at 10 connections (four servers' pools at 50 would
    pass the database's connection limit): the bare app, each floor and the app, interleaved
    over two rounds; req/s of each and its ratio to the bare app's."""
    servers = [bench.bare, *floors, bench.app]
    measure = Measure("read", 1, 10)
    runs: dict[str, list[Result]] = {s.name: [] for s in servers}
    for _ in range(2):
        for server in servers:
            runs[server.name].append(bench.run(server, buyers[:1], measure, seconds, warmup))
    bare_rps = summary(runs[bench.bare.name])["rps"]
    entry = {
        name: {**summary(found), "ratio": round(summary(found)["rps"] / bare_rps, 3)}
        for name, found in runs.items()
    }
    print(f"# {measure.name}: {entry}", file=sys.stderr)
    return {measure.name: entry}


def print_progress(name: str, entry: dict[str, Any]) -> None:
    app, bare = entry["app"], entry["bare"]
    print(
        f"# {name}: app {app['rps']} req/s p50 {app['p50_ms']} ms p99 {app['p99_ms']} ms; "
        f"bare {bare['rps']} req/s p50 {bare['p50_ms']} ms p99 {bare['p99_ms']} ms",
        file=sys.stderr,
    )


def missed_goals(results: dict[str, Any]) -> list[str]:
    missed = []
    for name, entry in results.items():
        if not name.startswith("read"):
            continue
        if entry["throughput app/bare"] < 0.85:
            missed.append(f"{name}: throughput app/bare {entry['throughput app/bare']} < 0.85")
        if entry["p99 app/bare"] > 1.5:
            missed.append(f"{name}: p99 app/bare {entry['p99 app/bare']} > 1.5")
        if entry.get("one tenant/two tenants", 1.0) < 0.9:
            missed.append(f"{name}: one tenant/two tenants {entry['one tenant/two tenants']} < 0.9")
    return missed


def soak(bench: Bench, buyers: list[Buyer], minutes: int, connections: int) -> dict[str, Any]:
    """The app alone under read load: one wrk run per minute (fresh tokens each time, so none
    expires mid-run), throughput and RSS after each."""
    measure = Measure("read", len(buyers), connections)
    bench.run(bench.app, buyers, measure, 30, 0)  # warm-up
    samples = []
    for minute in range(1, minutes + 1):
        result = bench.run(bench.app, buyers, measure, 60, 0)
        samples.append(
            {"minute": minute, "rps": round(result.rps, 1), "rss_mb": bench.app.rss() / 2**20}
        )
        print(f"# soak minute {minute}: {samples[-1]}", file=sys.stderr)
    edge = 2 if minutes >= 4 else 1
    first, last = samples[:edge], samples[-edge:]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    return {
        "minutes": minutes,
        "connections": connections,
        "samples": [{**s, "rss_mb": round(s["rss_mb"], 1)} for s in samples],
        "throughput drift": round(mean(last, "rps") / mean(first, "rps") - 1, 3),
        "RSS growth": round(mean(last, "rss_mb") / mean(first, "rss_mb") - 1, 3),
    }


# Main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="server workers")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: short, no goals")
    parser.add_argument("--soak", action="store_true", help="the app alone, for --minutes")
    parser.add_argument("--minutes", type=int, default=20, help="soak length")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="reads only: the bare app, the floors (floor_app.py) and the app",
    )
    args = parser.parse_args()
    if min(args.duration, args.workers, args.minutes) < 1:
        parser.error("--duration, --workers and --minutes must be at least 1")
    try:
        report = run(args)
    except BenchError as exc:
        print(f"bench/api.py: error: {exc}", file=sys.stderr)
        return 1
    missed = report.pop("missed goals")
    if args.json:
        print(json.dumps({**report, "missed goals": missed}))
    else:
        print_table(report, missed)
    return 1 if args.check and missed else 0


def print_table(report: dict[str, Any], missed: list[str]) -> None:
    """The results one line per measure, the goals and what missed them after."""
    print(f"workers {report['workers']}, app pool {report['app pool']} per worker")
    if "floors" in report:
        for name, entry in report["floors"].items():
            print(name)
            for server, found in entry.items():
                print(f"  {server:>20} {found['rps']:9.1f} req/s  {found['ratio']:6.3f} x bare")
    elif "soak" in report:
        soaked = report["soak"]
        for sample in soaked["samples"]:
            print(f"minute {sample['minute']:3}  {sample['rps']:8.1f} req/s  {sample['rss_mb']} MB")
        print(f"throughput drift {soaked['throughput drift']:+.1%}")
        print(f"RSS growth       {soaked['RSS growth']:+.1%}")
    else:
        head = ("measure", "app req/s", "p50 ms", "p99 ms", "bare req/s", "p50 ms", "p99 ms")
        print("".join(f"{h:>12}" for h in head) + "  app/bare  p99 a/b  1t/2t")
        for name, entry in report["results"].items():
            app, bare = entry["app"], entry["bare"]
            cells = [app["rps"], app["p50_ms"], app["p99_ms"], bare["rps"], bare["p50_ms"]]
            cells.append(bare["p99_ms"])
            one_two = entry.get("one tenant/two tenants", "")
            print(
                f"{name:>12}"
                + "".join(f"{c:12.1f}" for c in cells)
                + f"  {entry['throughput app/bare']:8.2f}  {entry['p99 app/bare']:7.2f}  {one_two}"
            )
    print("goals: " + "; ".join(f"{name} {goal}" for name, goal in report["goals"].items()))
    for line in missed:
        print(f"goal missed: {line}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = ensure_wrk()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ramparts-bench-")))
        urls = database(stack)
        port, bare_port = free_port(), free_port()
        base_env, env = server_env(work, urls, port)
        if args.workers > 1:
            env["RAMPARTS_REDIS_URL"] = redis_url(stack)
        buyers, redirect_uri = seed(urls, env)
        sizing = asyncio.run(_sizing(urls, args.workers))
        bare_env = {
            **base_env,
            "PYTHONPATH": env["PYTHONPATH"],
            "BENCH_BARE_DATABASE_URL": urls.owner.render_as_string(hide_password=False),
            "BENCH_BARE_POOL": f"{sizing.app.size},{sizing.app.overflow}",
        }
        app = stack.enter_context(serve_app(env, port, args.workers, work / "app.log"))
        bare = stack.enter_context(serve_bare(bare_env, bare_port, args.workers, work / "bare.log"))
        app.ready()  # both start at once
        bare.ready()
        bench = Bench(work, binary, app, bare, Tokens(app.base, buyers, redirect_uri))
        report: dict[str, Any] = {
            "workers": args.workers,
            "app pool": f"{sizing.app.size}+{sizing.app.overflow}",
            "quotes per buyer": QUOTES_PER_BUYER,
            "goals": GOALS,
        }
        if args.floor:
            floors = [
                stack.enter_context(serve_floor(bare_env, urls, args.workers, work, audited))
                for audited in (False, True)
            ]
            for floor in floors:
                floor.ready()
            report["floors"] = compare_floors(
                bench, floors, buyers, seconds=args.duration, warmup=3
            )
            report["missed goals"] = []
            return report
        if args.soak:
            report["soak"] = soak(bench, buyers, args.minutes, 50)
            soaked = report["soak"]
            report["missed goals"] = [
                f"soak {key} {soaked[key]:+.1%} beyond 10 %"
                for key in ("throughput drift", "RSS growth")
                if abs(soaked[key]) > 0.10
            ]
            return report
        quick = args.quick
        connections = (10,) if quick else (10, 50)
        measures = [
            Measure(operation, tenants, c)
            for operation in ("read", "write")  # reads first: writes add quotes
            for c in connections
            for tenants in (1, 2)
        ]
        report["seconds per run"] = 3 if quick else args.duration
        report["results"] = compare(
            bench,
            buyers,
            measures,
            rounds=1 if quick else 2,
            seconds=3 if quick else args.duration,
            warmup=1 if quick else 3,
        )
        report["missed goals"] = [] if quick else missed_goals(report["results"])
        return report
    raise AssertionError("unreachable")


def serve_floor(
    bare_env: dict[str, str], urls: DatabaseUrls, workers: int, work: Path, audited: bool
) -> AbstractContextManager[Server]:
    """A floor (`floor_app.py`), as the runtime role, with or without the audit event."""
    name = "floor" if audited else "floor, no audit"
    env = {
        **bare_env,
        "BENCH_FLOOR_DATABASE_URL": urls.app.render_as_string(hide_password=False),
        "BENCH_FLOOR_AUDIT": "1" if audited else "0",
    }
    log = work / f"{name.replace(', ', '-').replace(' ', '-')}.log"
    return serve_bare(env, free_port(), workers, log, name=name, module="floor_app")


async def _sizing(urls: DatabaseUrls, workers: int) -> Sizing:
    """The app pool `ramparts serve` gives each worker, for the bare app too."""
    owner = Database(urls.owner, pool_size=1, max_overflow=0)
    try:
        return size_pools(workers, await server_connections(owner))
    finally:
        await owner.dispose()


if __name__ == "__main__":
    sys.exit(main())
