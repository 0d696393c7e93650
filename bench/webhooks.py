"""PSP webhooks under load (issue 15): verify + store + enqueue events per second, against a bare
endpoint.

`ramparts serve` (a subprocess on a throwaway database, one worker) receives Stripe events,
each one new and signed by stripe-python's `WebhookSignature` with the secret the CLI put in the
KMS (`ramparts psp webhook-secret rotate --from-stdin`), so every delivery is verified (HMAC
against each active secret; two are active, the newest signs, so both are tried for half of
them), passes the edge's rules, is parsed and stored in its tenant's rows. The baseline,
`bare_webhook.py`, reads the same bodies and answers the same JSON under uvicorn with the same
server settings (uvloop, httptools), in the same run: bare, app, bare, app, each after a
warm-up. `wrk` (`webhooks.lua`, two threads) drives both at `--connections` connections,
each delivery sent once.

Afterwards every event sent to the app must be in `psp_events` exactly once: the exit status
is 1 on any non-2xx answer or a missing row, and with `--check` on a missed goal as well.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import stripe
from api import (
    HERE,
    RAMPARTS,
    BenchError,
    Server,
    ensure_wrk,
    free_port,
    serve_app,
    serve_bare,
    server_env,
)
from common import database, print_report

from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.payments.tenancy import tenant_metadata

GOALS = {"events/s": 500}
THREADS = 2
ROUNDS = 2
#: Deliveries made per second of a run: above what one worker can take on this kind of host.
MAX_RATE = 4000
Delivery = tuple[bytes, dict[str, str]]


def deliveries(count: int, tenant: uuid.UUID, signing: list[str]) -> list[Delivery]:
    """`count` new events about `tenant`'s PaymentIntents, signed now, alternately with each
    secret in `signing` (as the PSP does while a secret is rolled)."""
    made = []
    now = int(time.time())
    for n in range(count):
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "api_version": "2024-06-20",
            "created": now,
            "livemode": False,
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_" + secrets.token_hex(12),
                    "object": "payment_intent",
                    "amount": 5000 + n,
                    "currency": "eur",
                    "status": "succeeded",
                    "metadata": tenant_metadata(tenant),
                }
            },
        }
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            body, signing[n % len(signing)], now
        )
        made.append(
            (body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"})
        )
    return made


def drive(
    base: str, batch: list[Delivery], *, seconds: int, connections: int, work: Path
) -> dict[str, Any]:
    """`wrk` sending `batch` (each delivery once) for `seconds`: requests/s, p50 and p99 (ms),
    and the answers that were not 2xx or failed."""
    file = work / "deliveries.tsv"
    with file.open("w") as out:
        for body, headers in batch:
            out.write(f"{headers['Stripe-Signature']}\t{body.decode()}\n")
    command = [
        ensure_wrk(),
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(HERE / "webhooks.lua"),
        base,
        "--",
        str(file),
        str(THREADS),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own arguments
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode or line is None:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr or done.stdout}")
    requests, micros, bad_status, socket_errors, p50, p99 = map(int, line.split()[1:])
    return {
        "requests": requests,
        "rate": requests / (micros / 1e6),
        "p50 ms": round(p50 / 1000, 2),
        "p99 ms": round(p99 / 1000, 2),
        "errors": bad_status + socket_errors,
    }


def stored_count(urls: DatabaseUrls, tenant: uuid.UUID) -> int:
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute("SELECT count(*) FROM psp_events WHERE tenant_id = %s", (tenant,))
        return int(row.fetchone()[0])  # type: ignore[index]


def make_tenant(urls: DatabaseUrls) -> uuid.UUID:
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, 'bench-psp', 'Bench', 'eu')",
            (tenant,),
        )
    return tenant


def rotate(env: dict[str, str], secret: str, overlap: int) -> None:
    done = subprocess.run(  # noqa: S603 - our own arguments
        [RAMPARTS, "psp", "webhook-secret", "rotate", "--from-stdin", "--overlap", str(overlap)],
        env=env,
        input=secret + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise BenchError(f"webhook-secret rotate exited {done.returncode}: {done.stderr}")


def measure(
    app: Server, bare: Server, make: Any, *, seconds: int, connections: int, work: Path
) -> dict[str, Any]:
    """Bare, app, bare, app, each after a one-second warm-up; the best run of each."""
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "app": []}
    answered = {"bare": 0, "app": 0}
    # More deliveries than the fastest run could send, so none is sent twice.
    per_run = MAX_RATE * (seconds + 1)
    for _ in range(ROUNDS):
        for name, server in (("bare", bare), ("app", app)):
            warm = drive(
                server.base, make(MAX_RATE * 2), seconds=1, connections=connections, work=work
            )
            result = drive(
                server.base, make(per_run), seconds=seconds, connections=connections, work=work
            )
            runs[name].append(result)
            answered[name] += warm["requests"] + result["requests"]
    best = {name: max(r, key=lambda x: x["rate"]) for name, r in runs.items()}
    return {
        "events/s": round(best["app"]["rate"]),
        "bare events/s": round(best["bare"]["rate"]),
        "ratio app/bare": round(best["app"]["rate"] / best["bare"]["rate"], 3),
        "app p50/p99 ms": f"{best['app']['p50 ms']} / {best['app']['p99 ms']}",
        "bare p50/p99 ms": f"{best['bare']['p50 ms']} / {best['bare']['p99 ms']}",
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
        "app answered": answered["app"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ramparts-bench-")))
        urls = database(stack)
        tenant = make_tenant(urls)
        port, bare_port = free_port(), free_port()
        base_env, env = server_env(work, urls, port)
        # Two active secrets, as during a rotation: the previous one, then the current.
        previous, current = ("whsec_" + secrets.token_urlsafe(32) for _ in range(2))
        rotate(env, previous, 0)
        rotate(env, current, 3600)
        bare_env = {**base_env, "PYTHONPATH": env["PYTHONPATH"]}
        app = stack.enter_context(serve_app(env, port, 1, work / "app.log"))
        bare = stack.enter_context(
            serve_bare(
                bare_env,
                bare_port,
                1,
                work / "bare.log",
                name="bare webhook",
                module="bare_webhook",
            )
        )
        app.ready()
        bare.ready()
        before = stored_count(urls, tenant)
        result = measure(
            app,
            bare,
            lambda n: deliveries(n, tenant, [current, previous]),
            seconds=args.duration,
            connections=args.connections,
            work=work,
        )
        # Every answered delivery (warm-ups included) is one stored row, none twice; a request
        # still in flight when wrk stopped may be stored unanswered (at most one per connection).
        result["stored"] = stored_count(urls, tenant) - before
        slack = args.connections * ROUNDS * 2
        result["stored as answered"] = 0 <= result["stored"] - result["app answered"] <= slack
        return {
            "goals": GOALS,
            "connections": args.connections,
            "seconds per run": args.duration,
            **result,
        }
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--check", action="store_true", help="exit 1 on a missed goal")
    args = parser.parse_args()
    report = run(args)
    missed = [
        f"events/s {report['events/s']} < {GOALS['events/s']}"
        for _ in [0]
        if report["events/s"] < GOALS["events/s"]
    ]
    report["missed goals"] = missed
    print_report(report, as_json=args.json)
    broken = report["errors"] or not report["stored as answered"]
    return 1 if broken or (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
