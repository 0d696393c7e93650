"""AI-3's parts that need a remote model: each tenant's model calls carry its own API key,
and a tenant's request rate is shared by its people and ends in 429 for that tenant alone.

Both are shown on a second `ramparts serve` of the instance (`operating`) whose only model
endpoint is a stand-in on loopback (`model_stub`, which keeps the Authorization header of
every request), in the EU (the one region every tenant may reach), with a low tenant rate
and its limits counted in its own memory (no RAMPARTS_REDIS_URL): nothing of the instance
itself is stopped. The keys are set and removed as the operator does it, with `ramparts keys
set-model-key` on the instance's KMS: the check's own keys stand in for the first and last
tenants' keys while it runs, and the keys they held before are put back at the end.
"""

from __future__ import annotations

import secrets
import time
import uuid
from urllib.parse import urlsplit

import httpx

from ramparts.ai.model_keys import REFRESH_SECONDS, tenant_key_name
from ramparts.tabletop.conformance.model_stub import ModelStub, model_stub
from ramparts.tabletop.conformance.operating import operator_command, second_server
from ramparts.tabletop.conformance.playing import one_per_role_set, problem_slug
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["TENANT_RATE", "keyed_and_shared_limits"]

#: The second server's rate per tenant: few enough to reach, more than the key checks use.
TENANT_RATE = 4


def keyed_and_shared_limits(target: Target, evidence: list[str]) -> list[str]:
    policy = target.environment.get("RAMPARTS_MODEL_KEYS", "tenant")
    if policy != "tenant":
        evidence.append(f"RAMPARTS_MODEL_KEYS={policy}")
        return [f"RAMPARTS_MODEL_KEYS={policy}: a tenant without a key of its own shares one"]
    first, second = target.tenants()[0], target.tenants()[-1]
    if first == second:
        raise DrillError("the demo credentials list one tenant: no other to keep apart")
    colleagues = one_per_role_set(target, first)
    if len(colleagues) < 2:
        raise DrillError(f"the demo credentials list one person of {first}: none to share with")
    asker, colleague = target.session(colleagues[0]), target.session(colleagues[1])
    other = target.session(one_per_role_set(target, second)[0])
    keys = {slug: f"drill-{slug}-{secrets.token_hex(12)}" for slug in (first, second)}
    rotated = f"drill-{first}-{secrets.token_hex(12)}"
    settings: dict[str, str | None] = {
        "RAMPARTS_MODEL": "openai:drill-stand-in",
        "RAMPARTS_MODEL_REGION": "eu",
        "RAMPARTS_AI_TENANT_RATE": f"{TENANT_RATE}/minute",
        "RAMPARTS_REDIS_URL": None,  # its counts stay its own: the instance is not stopped
        "OPENAI_API_KEY": None,  # no shared key to fall back on
    }
    # What the tenants hold now, put back at the end: on a real install, their real keys.
    kept = {slug: _current_key(target, slug) for slug in (first, second)}
    wrong: list[str] = []
    try:
        _set_key(target, first, keys[first])
        _set_key(target, second, None)
        with (
            model_stub() as (stub, url),
            second_server(target, settings | {"OPENAI_BASE_URL": url}) as base,
        ):
            calls = _Calls(base, stub)
            keyless = calls.ask(other)
            evidence.append(f"{second} without a key: {keyless.line}")
            if keyless.status != 503 or keyless.slug != "no-model-key" or keyless.keys:
                wrong.append(f"{second}, which has no key, was not refused (or reached the model)")
            wrong += calls.served(asker, first, keys[first], evidence)
            _set_key(target, second, keys[second])
            _set_key(target, first, rotated)
            time.sleep(REFRESH_SECONDS + 0.5)  # the servers read a key again within this
            wrong += calls.served(other, second, keys[second], evidence)
            wrong += calls.served(asker, first, rotated, evidence, "after its key was rotated")
            wrong += _shared_rate(calls, (asker, colleague), first, evidence)
            wrong += calls.served(other, second, keys[second], evidence, "while it is limited")
        budget = settings | {"RAMPARTS_AI_TENANT_TOKENS": "1/day"}
        with (
            model_stub() as (stub, url),
            second_server(target, budget | {"OPENAI_BASE_URL": url}) as base,
        ):
            wrong += _shared_budget(_Calls(base, stub), (asker, colleague, other), evidence)
    finally:
        for slug in (first, second):
            _set_key(target, slug, kept[slug])
    evidence.append(f"the check's keys of {first} and {second} removed, theirs put back")
    return wrong


def _current_key(target: Target, tenant: str) -> str | None:
    """The tenant's own model key now (None: it has none), read as its operator."""
    if target.operator is None:
        raise DrillError("the instance's KMS is not reachable: the drill is not its operator")
    name = tenant_key_name(uuid.UUID(str(target.tenant(tenant)["id"])))
    held = target.operator.kms.read_secret(name)
    return (held.get_secret_value() or None) if held is not None else None


def _set_key(target: Target, tenant: str, key: str | None) -> None:
    """`ramparts keys set-model-key --tenant` as the operator runs it: the key on stdin."""
    arguments = ["keys", "set-model-key", "--tenant", tenant]
    done = operator_command(
        target, *arguments, *([] if key else ["--remove"]), stdin=f"{key}\n" if key else None
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise DrillError(f"ramparts keys set-model-key --tenant {tenant}: {said[0][:200]}")


class _Asked:
    def __init__(self, response: httpx.Response, keys: list[str | None]) -> None:
        self.status = response.status_code
        self.slug = problem_slug(response)
        self.detail = str(_json(response).get("detail", ""))
        self.keys = keys  # the Authorization headers its model calls came with
        self.line = f"{self.status} {self.slug or ''}".strip() + f", {len(keys)} model call(s)"


class _Calls:
    """Messages to the second server, each with a word of its own, and the keys the
    stand-in saw for it."""

    def __init__(self, base: str, stub: ModelStub) -> None:
        self._base = base
        self._stub = stub
        self._asked: dict[str, int] = {}

    def ask(self, session: ApiSession) -> _Asked:
        word = f"drill-{secrets.token_hex(6)}"
        with httpx.Client(base_url=self._base, timeout=60) as client:
            response = client.post(
                "/api/assistant",
                json={"message": f"Please note the word {word}."},
                # As a proxy in front of it would: the instance's public host, which it serves.
                headers={
                    "Authorization": f"Bearer {session.access_token}",
                    "Host": urlsplit(session.target.base_url).netloc,
                },
            )
        self._asked[session.username] = self._asked.get(session.username, 0) + 1
        return _Asked(response, self._stub.authorizations_of(word))

    def asked(self, session: ApiSession) -> int:
        return self._asked.get(session.username, 0)

    def served(
        self,
        session: ApiSession,
        tenant: str,
        key: str,
        evidence: list[str],
        when: str = "",
    ) -> list[str]:
        """`session`'s message is answered, and every model call it made carried `key`."""
        asked = self.ask(session)
        right = bool(asked.keys) and all(k == f"Bearer {key}" for k in asked.keys)
        said = f"{tenant}'s message{' ' + when if when else ''}: {asked.line}, "
        evidence.append(said + f"each with {tenant}'s own key: {right}")
        if asked.status != 200 or not right:
            return [f"{tenant}'s model call{' ' + when if when else ''} did not carry its own key"]
        return []


def _shared_rate(
    calls: _Calls, people: tuple[ApiSession, ApiSession], tenant: str, evidence: list[str]
) -> list[str]:
    """The colleague asks until the tenant's rate refuses: its first 429 must come once the
    tenant's people together made `TENANT_RATE` requests, the colleague fewer than that."""
    asker, colleague = people
    before = calls.asked(asker)
    answered = None
    for _ in range(TENANT_RATE + 1):
        answered = calls.ask(colleague)
        if answered.status == 429:
            break
    if answered is None:  # pragma: no cover - the loop runs at least once
        return ["no request was made"]
    own = calls.asked(colleague)
    evidence.append(
        f"{tenant}'s rate {TENANT_RATE}/minute: a colleague's request {own} (after "
        f"{before} by another person) → {answered.line}: {answered.detail}"
    )
    if answered.status != 429 or answered.slug != "rate-limited":
        return [f"{tenant}'s people made more than its {TENANT_RATE} requests a minute"]
    if own + before != TENANT_RATE + 1 or "organisation" not in answered.detail:
        return [f"the 429 after {own} request(s) of one person is not the tenant's rate"]
    return []


def _shared_budget(
    calls: _Calls, people: tuple[ApiSession, ApiSession, ApiSession], evidence: list[str]
) -> list[str]:
    """On a server whose tenants may spend one model token a day: a person's first message
    spends it, so a colleague's is refused for the tenant's budget; another tenant's is
    still served (its budget is its own)."""
    asker, colleague, other = people
    first, spent, served = calls.ask(asker), calls.ask(colleague), calls.ask(other)
    evidence.append(
        f"a tenant budget of 1 token a day: {asker.tenant} → {first.line}; a colleague → "
        f"{spent.line}; {other.tenant} → {served.line}"
    )
    wrong = []
    if first.status != 200 or spent.status != 429 or spent.slug != "budget-exhausted":
        wrong.append(f"{asker.tenant}'s people were not stopped by its spent token budget")
    if spent.keys:
        wrong.append("a message refused for the spent budget reached the model")
    if served.status != 200:
        wrong.append(f"{other.tenant} was refused for another tenant's budget")
    return wrong


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
