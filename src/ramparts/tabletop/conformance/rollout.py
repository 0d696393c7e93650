"""Live checks of the rollout controls: EX-2, the tabletop scenario played on the instance."""

from __future__ import annotations

from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.drills import served_drills
from ramparts.tabletop.report import Verdict
from ramparts.tabletop.scenario import run_tabletop
from ramparts.tabletop.target import Target

__all__ = ["tabletop"]

#: How much of the steps that did not hold the row's `observed` repeats.
MAX_OBSERVED = 600


@check("EX-2")
def tabletop(target: Target) -> Outcome:
    """`ramparts tabletop` played on the instance: passes only when every step holds."""
    report = run_tabletop(target, served_drills(target))
    expected = (
        "every step of the tabletop holds: a malicious prompt's money calls refused, money "
        "calls injected through third-party content held for a second person and rejected, "
        "forged, stale, replayed or altered webhooks refused, no payout before a verified "
        "payment"
    )
    evidence = [f"{row.id} {row.verdict.value}: {row.title}" for row in report.rows]
    missed = [row for row in report.rows if row.verdict is not Verdict.PASS]
    if report.passed:
        return passed(expected, f"all {len(report.rows)} steps held", evidence)
    detail = "; ".join(f"{row.id}: {row.observed}" for row in missed)
    return fail(
        expected,
        f"{len(missed)} of {len(report.rows)} steps did not hold: {detail}"[:MAX_OBSERVED],
        evidence,
    )
