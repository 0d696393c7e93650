"""Identity benchmarks: token verification throughput and login latency (see README.md)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database, print_report
from tests.identity.helpers import OVERLAP, obtain_tokens, provision
from tests.live import Servers, temporary_kms

from ramparts.db.engine import Database
from ramparts.identity.keys import load_key_ring
from ramparts.identity.passwords import HASHER
from ramparts.identity.tokens import TokenIssuer, TokenVerifier


def rate(work: object, seconds: float = 2.0) -> float:
    """Calls per second of `work()` over about `seconds`."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            work()  # type: ignore[operator]
        count += 200
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--logins", type=int, default=40, help="login samples")
    args = parser.parse_args()
    with ExitStack() as stack:
        kms = temporary_kms(Path(stack.enter_context(TemporaryDirectory())))
        urls = database(stack)
        servers = Servers(urls, kms)
        stack.callback(servers.stop)
        server = servers.start()
        accounts = [provision(urls, kms) for _ in range(args.logins)]

        # Login + TOTP + code exchange, end to end over HTTP (fresh user each: codes are
        # single use).
        latencies = []
        tokens: dict[str, object] = {}
        for account in accounts:
            start = time.perf_counter()
            tokens = obtain_tokens(server, account)
            latencies.append((time.perf_counter() - start) * 1000)

        # Verification on the API path with the key ring cached.
        async def ring():  # type: ignore[no-untyped-def]
            db = Database(urls.app, pool_size=1)
            try:
                async with db.session() as session:
                    return await load_key_ring(session, overlap=OVERLAP)
            finally:
                await db.dispose()

        key_ring = asyncio.run(ring())
        base = str(server.base_url).rstrip("/")
        verifier = TokenVerifier(issuer=base, audience=f"{base}/api")
        access = str(tokens["access_token"])
        # Warm: the API path, where a client presents the same token on every request.
        verify_rate = rate(lambda: verifier.verify(access, key_ring))
        # Cold: every token new, so every call checks a signature.
        issuer = TokenIssuer(issuer=base, audience=f"{base}/api", access_seconds=600, kms=kms)
        fresh = [
            issuer.access_token(
                key_ring,
                subject=uuid.uuid4(),
                tenant=uuid.uuid4(),
                roles=["buyer"],
                amr=["pwd", "otp"],
                acr="x",
                client_id="c",
                scope="openid",
                auth_time=datetime.now(UTC),
            )[0]
            for _ in range(3000)
        ]
        cold_verifier = TokenVerifier(issuer=base, audience=f"{base}/api")
        start = time.perf_counter()
        for token in fresh:
            cold_verifier.verify(token, key_ring)
        cold_rate = len(fresh) / (time.perf_counter() - start)

        private = ec.generate_private_key(ec.SECP256R1())
        message = b"x" * 600
        signature = private.sign(message, ec.ECDSA(hashes.SHA256()))
        public = private.public_key()
        raw_rate = rate(lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())))

        hasher = HASHER
        digest = hasher.hash("correct horse battery staple")
        argon2_ms = statistics.median(
            _time_ms(lambda: hasher.verify(digest, "correct horse battery staple"))
            for _ in range(10)
        )

    p50 = statistics.median(latencies)
    report = {
        "token_verifications_per_s_repeated_token": round(verify_rate),
        "token_verifications_per_s_new_tokens": round(cold_rate),
        "raw_ecdsa_p256_verifications_per_s": round(raw_rate),
        "new_token_ratio_to_raw_ecdsa": round(cold_rate / raw_rate, 3),
        "api_path_verify_goal_met": verify_rate >= 10_000,  # repeated tokens, as on the API
        "login_mfa_token_p50_ms": round(p50, 1),
        "login_mfa_token_p95_ms": round(sorted(latencies)[int(len(latencies) * 0.95) - 1], 1),
        "argon2_verify_ms": round(argon2_ms, 1),
        "login_p50_ratio_to_argon2": round(p50 / argon2_ms, 2),
        "argon2_parameters": {
            "type": "argon2id",
            "time_cost": hasher.time_cost,
            "memory_cost_kib": hasher.memory_cost,
            "parallelism": hasher.parallelism,
        },
        "login_goal_met": p50 <= 150,
        "login_samples": len(latencies),
    }
    print_report(report, as_json=args.json)


def _time_ms(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
