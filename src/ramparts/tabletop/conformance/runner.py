"""Runs every control's live checks (the runtime's, then each app's) and makes the report."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from ramparts.tabletop.conformance import (
    ai,
    authorization,
    identity,
    payments,
    platform,
    redteaming,
    rollout,
)
from ramparts.tabletop.conformance.checks import CHECKS, Check, Outcome, fail
from ramparts.tabletop.conformance.controls import CONTROLS, SECTIONS
from ramparts.tabletop.drills import AppDrills
from ramparts.tabletop.progress import Progress, Silent
from ramparts.tabletop.report import Report, Row, Verdict
from ramparts.tabletop.target import Target

__all__ = ["run_conformance"]

# The modules whose checks register themselves on import.
_REGISTERED = (ai, authorization, identity, payments, platform, redteaming, rollout)


def run_conformance(
    target: Target,
    drills: Sequence[tuple[str, AppDrills]],
    *,
    only: Collection[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """One row per control id (those of `only`, else all), in the checklist's order."""
    progress = progress or Silent()
    wanted = [control for control in CONTROLS if only is None or control in only]
    report = Report("conformance", "Ramparts conformance", configuration=dict(target.description))
    progress.start(len(wanted), "conformance")
    for control in wanted:
        checks: list[tuple[str, Check]] = []
        if control in CHECKS:
            checks.append(("runtime", CHECKS[control]))
        checks += [(name, d.checks[control]) for name, d in drills if control in d.checks]
        report.rows.append(_row(target, control, checks))
        progress.advance(control)
    return report


def _row(target: Target, control: str, checks: list[tuple[str, Check]]) -> Row:
    section = SECTIONS[control.split("-", maxsplit=1)[0]]
    if not checks:
        return Row(
            control,
            CONTROLS[control],
            Verdict.NOT_IMPLEMENTED,
            "a live check of this control",
            "no live check exists for it",
            section=section,
        )
    began = time.monotonic()
    outcomes = [(name, _run(check, target)) for name, check in checks]
    labelled = len(outcomes) > 1
    verdict = (
        Verdict.PASS
        if all(o.verdict is Verdict.PASS for _, o in outcomes)
        else Verdict.FAIL
        if any(o.verdict is Verdict.FAIL for _, o in outcomes)
        else Verdict.NOT_IMPLEMENTED
    )

    def joined(parts: list[tuple[str, str]]) -> str:
        return " ".join(f"[{name}] {text}" if labelled else text for name, text in parts)

    return Row(
        control,
        CONTROLS[control],
        verdict,
        joined([(name, o.expected) for name, o in outcomes]),
        joined([(name, o.observed) for name, o in outcomes]),
        [f"[{name}] {line}" if labelled else line for name, o in outcomes for line in o.evidence],
        section=section,
        seconds=time.monotonic() - began,
    )


def _run(check: Check, target: Target) -> Outcome:
    try:
        return check(target)
    except Exception as exc:  # noqa: BLE001 - any failure of a check is a FAIL, with its reason
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return fail("the check completes", f"the check could not complete: {reason}")
