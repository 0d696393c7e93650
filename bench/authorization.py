"""Authorization benchmark: one decision's latency (see README.md).

Side by side in one run: Ramparts' `PolicyEngine.decide` (the API path: the parsed policy set,
decisions remembered by request attributes), `PolicyEngine.evaluate` (the parsed policy set,
Cedar asked every time), cedarpy re-parsing the policy text on every call, and PyCasbin on an
equivalent RBAC-with-domains model (roles per tenant, no sensitivity, MFA or channel rules).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import casbin
import cedarpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_report

from ramparts.apps import policy_fragments, selected_apps
from ramparts.policy.compose import composition
from ramparts.policy.engine import Channel, PolicyEngine, Subject, Target
from ramparts.quotes.actions import QuoteAction

SAMPLES = 3000
QUOTE = QuoteAction.QUOTE_READ.entity_type

CASBIN_MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
"""


def p50_us(call: Callable[[], Any], samples: int = SAMPLES) -> float:
    for _ in range(50):
        call()
    times = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


def casbin_enforcer(directory: Path) -> casbin.Enforcer:
    model = directory / "model.conf"
    model.write_text(CASBIN_MODEL)
    policy = directory / "policy.csv"
    rows = ["p, finance, acme, deposit, charge", "p, finance, acme, refund, issue"]
    rows += ["g, alice, finance, acme"]
    policy.write_text("\n".join(rows) + "\n")
    return casbin.Enforcer(str(model), str(policy))


def owned_quotes_p50_us(engine: PolicyEngine) -> float:
    """Ownership names the buyer and seller of each quote; decisions are still remembered (by
    which ids are the same user), so a buyer going through their quotes stays on the fast
    path whatever the quote and its parties."""
    buyers = [f"buyer-{n}" for n in range(1000)]
    requests = [
        (
            Subject(buyer, "acme", "eu", frozenset({"buyer"}), frozenset({"pwd", "otp"})),
            Target(
                QUOTE,
                f"q-{n}",
                "acme",
                parties=(("buyer", buyer), ("seller", f"seller-{n % 7}")),
            ),
        )
        for n, buyer in enumerate(buyers)
    ]
    if not all(
        engine.decide(s, QuoteAction.QUOTE_READ, t, Channel.UI).allowed for s, t in requests
    ):
        raise SystemExit("a buyer must read their own quotes")
    turn = iter(range(10**9))

    def one() -> None:
        subject, target = requests[next(turn) % len(requests)]
        engine.decide(subject, QuoteAction.QUOTE_READ, target, Channel.UI)

    return p50_us(one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    # The benchmarked app's Cedar composed with the runtime's, as a server serving it has.
    composed = composition(policy_fragments(selected_apps(["quotes"])))
    engine = composed.engine()
    subject = Subject("alice", "acme", "eu", frozenset({"finance"}), frozenset({"pwd", "otp"}))
    action, channel = QuoteAction.DEPOSIT_CHARGE, Channel.API
    target = Target(action.entity_type, "dep-1", "acme", "confidential")
    if not engine.decide(subject, action, target, channel).allowed:
        raise SystemExit("the benchmark request must be allowed")
    text = composed.policies
    request = {
        "principal": {"type": "User", "id": "alice"},
        "action": {"type": action.cedar_type, "id": action.name},
        "resource": {"type": action.entity_type, "id": "dep-1"},
        "context": {
            "tenant": "acme",
            "region": "eu",
            "sensitivity": "confidential",
            "amr": ["otp", "pwd"],
            "channel": "api",
        },
    }
    entities: list[dict[str, Any]] = [
        {
            "uid": {"type": "User", "id": "alice"},
            "attrs": {"tenant": "acme"},
            "parents": [{"type": "Role", "id": "finance"}],
        },
        {
            "uid": {"type": action.entity_type, "id": "dep-1"},
            "attrs": {"tenant": "acme", "sensitivity": "confidential"},
            "parents": [],
        },
    ]
    if not cedarpy.is_authorized(request, text, entities).allowed:
        raise SystemExit("the re-parsing baseline must decide the same")
    with tempfile.TemporaryDirectory() as scratch:
        enforcer = casbin_enforcer(Path(scratch))
        if not enforcer.enforce("alice", "acme", "deposit", "charge"):
            raise SystemExit("the Casbin baseline must decide the same")
        report = {
            "decide_p50_us (API path)": round(
                p50_us(lambda: engine.decide(subject, action, target, channel)), 1
            ),
            "evaluate_p50_us (parsed policy set)": round(
                p50_us(lambda: engine.evaluate(subject, action, target, channel)), 1
            ),
            "cedarpy_reparse_p50_us": round(
                p50_us(lambda: cedarpy.is_authorized(request, text, entities), 500), 1
            ),
            "casbin_rbac_p50_us": round(
                p50_us(lambda: enforcer.enforce("alice", "acme", "deposit", "charge")), 1
            ),
            "decide_p50_us (a buyer, each time another of their own quotes)": round(
                owned_quotes_p50_us(engine), 1
            ),
        }
    report["goal_decide_p50_le_50us"] = report["decide_p50_us (API path)"] <= 50
    print_report(report, as_json=args.json)


if __name__ == "__main__":
    main()
