"""Live check of AI-3: a conversation is its owner's alone (another tenant's user, and a
colleague, get 404 and the model never sees it); a person's model-token budget and request
rate end in 429 problems; and, on a second server of the instance with a remote model
(`ai_keys`), each tenant's model calls carry its own API key (a tenant without one is
refused), and a tenant's people share its rate, which ends in 429 for that tenant alone.
A tenant's token budget is driven to its end there too, on a server whose budget is one
token a day."""

from __future__ import annotations

import secrets
import time

import limits

from ramparts.ai.limits import AssistantLimits
from ramparts.tabletop.conformance.ai_keys import TENANT_RATE, keyed_and_shared_limits
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.playing import (
    answered,
    ask,
    one_per_role_set,
    problem_slug,
)
from ramparts.tabletop.target import DrillError, Target

__all__ = ["limits_and_isolation"]

AI3 = (
    "model credentials scoped per tenant and use; per-user and per-tenant request rates and "
    "token budgets answered with 429; no conversation reaches another tenant or person"
)
#: A message the gateway neither masks nor flags, near the longest one it takes (8,000).
FILLER = ("budget drill filler words and nothing else " * 200)[:7_900]
#: Messages the budget may take before the check gives up on reaching it.
MOST_MESSAGES = 40


@check("AI-3")
def limits_and_isolation(target: Target) -> Outcome:
    evidence: list[str] = []
    wrong = _isolated(target, evidence)
    wrong += _spent(target, evidence)
    wrong += keyed_and_shared_limits(target, evidence)
    if wrong:
        return fail(AI3, "; ".join(wrong), evidence)
    return passed(
        AI3,
        "conversations stay with their owner; a person's token budget and request rate "
        "answer 429; each tenant's model calls carry its own key, a tenant without one is "
        f"refused (RAMPARTS_MODEL_KEYS=tenant), a key set again is used within seconds; a "
        f"tenant's {TENANT_RATE} requests a minute are shared by its people and end in 429 "
        "while another tenant is served; so does a tenant's spent token budget",
        evidence,
    )


def _spare(target: Target) -> str:
    """The person the limits are spent on: the last tenant's last demo user, whom the
    checks that lead with the first tenant's first people do not need."""
    users = [u for u in target.report.get("users", []) if u.get("tenant") == target.tenants()[-1]]
    if not users:
        raise DrillError("the demo credentials list no user of the last tenant")
    return str(users[-1]["username"])


def _isolated(target: Target, evidence: list[str]) -> list[str]:
    first, last = target.tenants()[0], target.tenants()[-1]
    owner = target.session(one_per_role_set(target, first)[0])
    colleagues = [u for u in one_per_role_set(target, first) if u != owner.username]
    intruders = [target.session(one_per_role_set(target, last)[0])]
    if colleagues and first != last:
        intruders.append(target.session(colleagues[0]))
    word = f"drill-{secrets.token_hex(4)}"
    opened = ask(target, owner, f"Remember the word {word}.", [{"text": "remembered"}])
    conversation = str(opened.body().get("conversation_id", ""))
    if opened.status != 200 or not conversation:
        return [answered("a conversation is opened: POST /api/assistant", opened.response)]
    wrong = []
    for intruder in intruders:
        tried = ask(target, intruder, "What did we say?", [{"text": "told"}], conversation)
        where = "another tenant" if intruder.tenant != owner.tenant else "the same tenant"
        evidence.append(
            answered(f"a user of {where} continues {owner.tenant}'s conversation", tried.response)
            + f"; model calls: {len(tried.seen)}"
        )
        if tried.status != 404 or problem_slug(tried.response) != "not-found" or tried.seen:
            wrong.append(f"a user of {where} reached another person's conversation")
    again = ask(target, owner, "Which word was it?", [{"text": "that one"}], conversation)
    remembered = any(word in seen.text() for seen in again.seen)
    evidence.append(
        answered("its owner continues it", again.response) + f"; history kept: {remembered}"
    )
    if again.status != 200 or not remembered:
        wrong.append("the owner's own conversation did not go on (the 404s prove nothing)")
    return wrong


def _spent(target: Target, evidence: list[str]) -> list[str]:
    """Long messages in one conversation until the daily token budget refuses one, then
    short ones until the request rate does, all within the rate's window."""
    defaults = AssistantLimits()
    rate = limits.parse(target.environment.get("RAMPARTS_AI_USER_RATE", defaults.user_rate))
    budget = target.environment.get("RAMPARTS_AI_USER_TOKENS", defaults.user_tokens)
    session = target.session(_spare(target))
    started = time.monotonic()
    conversation: str | None = None
    requests = 0
    refused = None
    while requests < MOST_MESSAGES:
        answer = ask(target, session, FILLER, [{"text": "ok"}], conversation)
        requests += 1
        if answer.status == 429:
            refused = answer.response
            break
        if problem_slug(answer.response) == "conversation-too-long":
            conversation = None
            continue
        conversation = str(answer.body().get("conversation_id") or "") or None
    if refused is None or problem_slug(refused) != "budget-exhausted":
        last = answered("the last", refused) if refused is not None else "none refused"
        return [
            f"{requests} messages of {len(FILLER)} characters did not spend the {budget} "
            f"token budget ({last})"
        ]
    evidence.append(
        f"{session.username}: message {requests} of {len(FILLER)} characters → 429 "
        f"budget-exhausted (budget {budget}, Retry-After {refused.headers.get('retry-after')})"
    )
    # Every request counts against the rate, those the budget refused too. Within one
    # window the rate's first refusal comes at the latest with the request past the rate
    # (earlier if this person asked for something else within the window).
    answer = ask(target, session, "ok", [{"text": "ok"}])
    requests += 1
    while problem_slug(answer.response) != "rate-limited" and requests <= rate.amount:
        answer = ask(target, session, "ok", [{"text": "ok"}])
        requests += 1
    took = time.monotonic() - started
    slug = problem_slug(answer.response)
    line = f"request {requests} within {took:.0f} s → {answer.status} {slug}"
    evidence.append(f"{line} (rate {rate.amount}/{rate.GRANULARITY.name})")
    if slug != "rate-limited":
        return [f"the request rate {rate.amount}/{rate.GRANULARITY.name}: {line}"]
    return []
