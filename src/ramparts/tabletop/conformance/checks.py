"""One live check per control: a function of the running instance (`Target`) that returns
what it saw (`Outcome`). A check raises nothing on a failing control: it says FAIL and why.
An exception means the check itself could not finish, and the runner reports that as FAIL
with the reason: a control is never passed on a check that did not run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ramparts.tabletop.conformance.controls import CONTROLS
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.target import Target

__all__ = ["CHECKS", "Check", "Outcome", "check", "fail", "passed"]


@dataclass
class Outcome:
    """What a check saw: `expected` the control's "done" in a line, `observed` what the
    instance did, `evidence` one short line per fact (audit events as `audit seq <n>`)."""

    verdict: Verdict
    expected: str
    observed: str
    evidence: list[str] = field(default_factory=list)


def passed(expected: str, observed: str, evidence: list[str] | None = None) -> Outcome:
    return Outcome(Verdict.PASS, expected, observed, evidence or [])


def fail(expected: str, observed: str, evidence: list[str] | None = None) -> Outcome:
    return Outcome(Verdict.FAIL, expected, observed, evidence or [])


Check = Callable[[Target], Outcome]
#: control id → its runtime check (registered by the modules of this package).
CHECKS: dict[str, Check] = {}


def check(control: str) -> Callable[[Check], Check]:
    """Register the runtime's live check of `control` (one per id)."""
    if control not in CONTROLS:
        raise ValueError(f"{control} is not a control id")

    def register(function: Check) -> Check:
        if control in CHECKS:
            raise ValueError(f"{control} has a check already")
        CHECKS[control] = function
        return function

    return register
