"""The hash chain: one canonical byte string per event, linked by SHA-256.

`hash = SHA-256(body || prev_hash)` where `body` is the event as canonical JSON: keys sorted,
no whitespace, ASCII only (non-ASCII escaped), no NaN. The database computes it when it chains
a queued event (`audit_sequence` in the sequencer migration, the only way in) and stores the
body verbatim, so a verifier needs these lines and the rows, nothing else from Ramparts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

__all__ = ["GENESIS", "canonical", "event_hash", "names_its_row"]

#: The `prev_hash` of every chain's first event.
GENESIS = bytes(32)


def canonical(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def event_hash(body: bytes, prev_hash: bytes) -> bytes:
    return hashlib.sha256(body + prev_hash).digest()


def names_its_row(tenant: str) -> Callable[[bytes, int], bool]:
    """A check that a body says it is event `seq` of `tenant`, without parsing it.

    The top-level keys are fixed and sorted, so a body always ends with
    `,"seq":N,"tenant":"…","time":"…"}`; the last `,"seq":` in it is the top-level one because
    the time string that follows cannot contain one.
    """
    tail = f',"tenant":"{tenant}","time":"'.encode()

    def check(body: bytes, seq: int) -> bool:
        at = body.rfind(b',"seq":')
        return at >= 0 and body.startswith(b',"seq":%d%s' % (seq, tail), at)

    return check
