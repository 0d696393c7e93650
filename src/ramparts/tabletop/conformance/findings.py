"""What a check collects while it acts: one evidence line per fact it saw, a problem for each
fact that breaks the control, and each part of the control it could not prove here. Its
verdict is FAIL as soon as there is one problem, and never PASS with a part unproven."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ramparts.tabletop.conformance.checks import Outcome, fail, passed
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.target import DrillError

__all__ = ["Findings"]


@dataclass
class Findings:
    expected: str
    evidence: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def saw(self, line: str) -> None:
        self.evidence.append(line)

    def expect(self, holds: bool, line: str, problem: str) -> bool:
        """Record `line`; when the fact does not hold, `problem` says what is wrong."""
        self.evidence.append(line if holds else f"{line} ✗")
        if not holds:
            self.problems.append(problem)
        return holds

    def unproven(self, what: str) -> None:
        """A part of the control this check cannot prove where it runs (said, never passed)."""
        self.evidence.append(f"not proven: {what}")
        self.missing.append(what)

    @contextmanager
    def part(self, what: str) -> Iterator[None]:
        """A part of the check that may not be able to finish (a person cannot sign in): what
        the other parts saw is kept, and this one's reason is a problem, never a pass."""
        try:
            yield
        except DrillError as exc:
            self.problems.append(f"{what} could not complete: {exc}")

    def outcome(self, observed: str) -> Outcome:
        """PASS with `observed` when nothing broke the control and every part was proven;
        FAIL naming each problem; else NOT-IMPLEMENTED naming each unproven part."""
        if self.problems:
            return fail(self.expected, "; ".join(self.problems), self.evidence)
        if self.missing:
            observed = "not proven here: " + "; ".join(self.missing)
            return Outcome(Verdict.NOT_IMPLEMENTED, self.expected, observed, self.evidence)
        return passed(self.expected, observed, self.evidence)
