"""AI gateway overhead benchmark (see README.md): the time the gateway adds for one tool call,
with the model and the tool body taking no time: JSON Schema, unmasking, the kill-switch,
provenance, Cedar re-authorization, the savepoint and result schema, masking the result, its
audit event and its place in the stored conversation.

Measured as a marginal cost against a real database: requests whose (instant) model asks for
CALLS tool calls, alternating with requests whose model asks for none; each call costs
(request with calls - median request without) / CALLS. What a request costs whatever it does
(its session, the model-call decision, the stored conversation) is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database, print_report
from tests.identity.helpers import TEST_REDACTOR, provisioning_for
from tests.live import temporary_kms

from ramparts.ai.conversations import Conversations
from ramparts.ai.gateway import CALLS_PER_MESSAGE, Gateway, ModelEndpoint
from ramparts.ai.killswitch import KillSwitch
from ramparts.ai.limits import AssistantLimits, Limiter
from ramparts.ai.models import ModelTurn, ToolCall
from ramparts.ai.tools import AfterUntrusted, Risk, Tool, ToolRegistry, ToolRun
from ramparts.apps import policy_engine, selected_apps
from ramparts.audit.services import AuditLog
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.auth import Principal
from ramparts.policy.engine import Target
from ramparts.policy.services import Authorizer, TenantRegions
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.roles import BUYER

CALLS = 4
ROUNDS = 120
WARM_UP = 10
QUOTE = str(uuid.UUID(int=7))
PLENTY = "100000/minute"
UNLIMITED = AssistantLimits(
    user_rate=PLENTY, tenant_rate=PLENTY, user_tokens=PLENTY, tenant_tokens=PLENTY
)


class Burst:
    """An instant model: asked "calls N", it makes N tool calls, then answers."""

    name = "bench"

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        last = messages[-1]
        if last["role"] == "user" and last["content"].startswith("calls "):
            count = int(last["content"].split()[1])
            if count:
                call = ToolCall("read_quote", {"quote_id": QUOTE})
                return ModelTurn(None, (call,) * count)
        return ModelTurn("done")


async def _nothing(run: ToolRun) -> dict[str, Any]:
    return {"quote_id": run.arguments["quote_id"], "title": "Office chairs"}


async def _target(run: ToolRun) -> Target:
    tenant, caller = str(run.principal.tenant_id), str(run.principal.user_id)
    quote = QuoteAction.QUOTE_READ.entity_type
    return Target(
        quote, run.arguments["quote_id"], tenant, "internal", parties=(("buyer", caller),)
    )


def _tool() -> Tool:
    return Tool(
        name="read_quote",
        description="Read a quote.",
        arguments={
            "type": "object",
            "properties": {"quote_id": {"type": "string", "format": "uuid"}},
            "required": ["quote_id"],
            "additionalProperties": False,
        },
        result={
            "type": "object",
            "properties": {"quote_id": {"type": "string"}, "title": {"type": "string"}},
            "required": ["quote_id", "title"],
            "additionalProperties": False,
        },
        action=QuoteAction.QUOTE_READ,
        risk=Risk.WRITE,
        run=_nothing,
        target=_target,
        sensitive=frozenset({"quote_id"}),
        trusted=frozenset({"/quote_id"}),  # the title is the other party's text
        # The path measured is a write that runs: the app's explicit choice after untrusted
        # content (the default sends it to a person), with room for the 4 calls per message.
        after_untrusted=AfterUntrusted.RUN,
    )


async def run(urls: Any, home: Path) -> tuple[list[float], list[float]]:
    kms = temporary_kms(home)
    owner = Database(urls.owner, pool_size=1)
    provisioning = provisioning_for(owner, kms)
    tenant = await provisioning.ensure_tenant(slug="bench", name="Bench", region="eu")
    user = await provisioning.set_user(
        tenant,
        username="buyer@bench.test",
        display_name="B",
        password=secrets.token_urlsafe(16),
        roles=(BUYER,),
    )
    await owner.dispose()
    database = Database(urls.app, pool_size=2)
    audit = AuditLog(database, TEST_REDACTOR)
    registry = ToolRegistry()
    registry.register(_tool())
    gateway = Gateway(
        database,
        registry,
        # The engine of the app the benchmarked tool belongs to, as a server serving it has.
        Authorizer(policy_engine(selected_apps(["quotes"])), audit, TenantRegions(database)),
        Conversations(SealedFields(DataKeys(kms))),
        audit,
        endpoints=[ModelEndpoint("bench", "local", Burst())],
        limiter=Limiter(None, UNLIMITED),
        kill_switch=KillSwitch(),
        ui_client="ramparts-web",
        calls_per_message={**CALLS_PER_MESSAGE, Risk.WRITE: 4},
    )
    principal = Principal(
        subject=str(user),
        user_id=user,
        tenant_id=tenant.id,
        roles=(BUYER,),
        amr=("pwd", "otp"),
        acr="mfa",
        client_id="bench",
        scope="openid",
        jti=uuid.uuid4(),
        auth_time=datetime.now(UTC),
    )
    plain: list[float] = []
    busy: list[float] = []
    for round_ in range(ROUNDS):
        for count, into in ((0, plain), (CALLS, busy)):
            started = time.perf_counter()
            answer = await gateway.converse(principal, f"calls {count} on quote {QUOTE}", None)
            elapsed = time.perf_counter() - started
            if any(a.status.value != "executed" for a in answer.actions):
                raise SystemExit(f"a benchmark call was not executed: {answer.actions}")
            if round_ >= WARM_UP:
                into.append(elapsed)
    await database.dispose()
    return plain, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with ExitStack() as stack:
        urls = database(stack)
        home = Path(stack.enter_context(TemporaryDirectory()))
        plain, busy = asyncio.run(run(urls, home))
    base = statistics.median(plain)
    per_call = sorted((t - base) / CALLS * 1000 for t in busy)
    p50, p99 = statistics.median(per_call), per_call[int(len(per_call) * 0.99) - 1]
    report = {
        "calls_per_request": CALLS,
        "requests": len(busy),
        "per_call_p50_ms": round(p50, 3),
        "per_call_p99_ms": round(p99, 3),
        "request_without_calls_p50_ms": round(base * 1000, 3),
        "goal_p50_2ms": p50 <= 2.0,
        "goal_p99_10ms": p99 <= 10.0,
    }
    print_report(report, as_json=args.json)


if __name__ == "__main__":
    main()
