# ruff: noqa: PLC0415 - each sabotage imports what it breaks only when asked for
"""Breaks one control inside an instance the drills play against, for the tests that prove a
broken control makes its conformance row FAIL, its tabletop step fail and the command exit
non-zero. Loaded by Python at start-up when this directory is on PYTHONPATH; does nothing
unless RAMPARTS_TEST_SABOTAGE names a sabotage (`name` or `name=argument`).

Only what cannot be broken from outside lives here (code paths); a dropped RLS policy or a
disabled audit trigger is done by the tests on the instance's database, as an attacker with
the owner's credentials would.
"""

from __future__ import annotations

import os
from typing import Any


def _webhook_verification_off(_: str) -> None:
    """Every delivery is taken as signed: forged, stale, replayed and altered ones too."""
    from ramparts.payments import webhooks
    from ramparts.payments.signatures import Signed

    def verify(body: bytes, header: str | None, secrets: Any, *, now: float, **_: Any) -> Signed:
        return Signed(int(now), 0)

    webhooks.verify = verify  # type: ignore[assignment]


def _killswitch_ignored(_: str) -> None:
    """The switch is read and thrown away: every tool stays on, the assistant never stops."""
    from ramparts.ai.killswitch import KillSwitch

    async def stopped(self: KillSwitch, session: Any, tenant: Any) -> frozenset[str]:
        return frozenset()

    KillSwitch.stopped = stopped  # type: ignore[method-assign]


def _tool_role_check_removed(tool_name: str) -> None:
    """The role check of one tool is gone: it is offered to everyone, and Cedar's answer on
    its action is replaced by an allow."""
    from ramparts.ai.gateway import Gateway
    from ramparts.policy.engine import PolicyDecision, PolicyEngine

    actions: set[str] = set()
    offered = Gateway._offered

    def offered_to_all(self: Gateway, principal: Any, context: Any) -> Any:
        # The action is known before anything is decided: a deny remembered by the very
        # decisions below would outlive the sabotage (`PolicyEngine.decide` remembers).
        tool = self._registry.get(tool_name)
        if tool is not None:
            actions.add(tool.action.qualified)
        tools = offered(self, principal, context)
        if tool is not None:
            tools[tool.name] = tool
        return tools

    evaluate = PolicyEngine.evaluate
    decide = PolicyEngine.decide

    def allowing(self: PolicyEngine, subject: Any, action: Any, *args: Any, **kw: Any) -> Any:
        decision = evaluate(self, subject, action, *args, **kw)
        if action.qualified in actions and not decision.allowed:
            return PolicyDecision(True, ("sabotage",))
        return decision

    def deciding(self: PolicyEngine, subject: Any, action: Any, *args: Any, **kw: Any) -> Any:
        # Never a remembered answer on the sabotaged action: one given before the tool was
        # first offered (an API route, another tool list) would still be the real one.
        if action.qualified in actions:
            return allowing(self, subject, action, *args, **kw)
        return decide(self, subject, action, *args, **kw)

    Gateway._offered = offered_to_all  # type: ignore[method-assign]
    PolicyEngine.evaluate = allowing  # type: ignore[method-assign]
    PolicyEngine.decide = deciding  # type: ignore[method-assign]


def _call_time_authorization_off(_: str) -> None:
    """The gateway judges a model's call as it judged the offer, on a record of the caller's
    own, not on the real one: the call-time re-authorization is gone, the offer unchanged."""
    from dataclasses import replace

    from ramparts.ai.gateway import Gateway
    from ramparts.policy.engine import Target

    call = Gateway._call

    async def unchecked(self: Gateway, session: Any, principal: Any, **kw: Any) -> Any:
        def as_offered(tool: Any) -> Any:
            async def target(run: Any) -> Target:
                real: Target = await tool.target(run)  # still found (or not) as before
                names = self._authorizer.party_attributes(real.type)
                parties = tuple((name, principal.subject) for name in names)
                return replace(real, parties=parties)

            return replace(tool, target=target)

        kw["offered"] = {name: as_offered(tool) for name, tool in kw["offered"].items()}
        return await call(self, session, principal, **kw)

    Gateway._call = unchecked  # type: ignore[method-assign]


def _tool_results_unchecked(_: str) -> None:
    """A tool's result reaches the model whatever it holds: its schema is not checked."""
    from ramparts.ai import gateway

    gateway._checked = lambda tool, result: result


SABOTAGES = {
    "webhook-verification-off": _webhook_verification_off,
    "killswitch-ignored": _killswitch_ignored,
    "tool-role-check-removed": _tool_role_check_removed,
    "call-time-authorization-off": _call_time_authorization_off,
    "tool-results-unchecked": _tool_results_unchecked,
}

_asked = os.environ.get("RAMPARTS_TEST_SABOTAGE", "")
if _asked:
    _name, _, _argument = _asked.partition("=")
    SABOTAGES[_name](_argument)
