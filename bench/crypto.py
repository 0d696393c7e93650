"""Field encryption benchmark (see README.md): seal + open of small fields per second on one
core with the data key cached, beside raw AES-256-GCM from `cryptography` in the same run."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_report

from ramparts.crypto.fields import DataKey, FieldCipher

VALUE = b"DE89370400440532013000"  # pragma: allowlist secret
SECONDS = 2.0


def per_second(work: Callable[[], object]) -> float:
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS:
        for _ in range(1000):
            work()
        done += 1000
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    key = DataKey(uuid.uuid4(), 1, secrets.token_bytes(32))
    cipher = FieldCipher()
    row = str(uuid.uuid4())

    def field_round_trip() -> None:
        sealed = cipher.seal(key, table="payees", column="iban", row=row, value=VALUE)
        cipher.open(key, table="payees", column="iban", row=row, sealed=sealed)

    raw = AESGCM(key.secret)
    aad = b"ramparts-field:tenant:payees:iban:row"

    def raw_round_trip() -> None:
        nonce = secrets.token_bytes(12)
        raw.decrypt(nonce, raw.encrypt(nonce, VALUE, aad), aad)

    fields = per_second(field_round_trip)
    baseline = per_second(raw_round_trip)
    report = {
        "field_seal_open_per_s": round(fields),
        "raw_aesgcm_per_s": round(baseline),
        "ratio_to_raw": round(fields / baseline, 2),
        "goal_100k_per_s": fields >= 100_000,
        "goal_ratio_0_5": fields / baseline >= 0.5,
    }
    print_report(report, as_json=args.json)


if __name__ == "__main__":
    main()
