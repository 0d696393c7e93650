"""`ramparts tabletop` (EX-2): the checklist's tabletop scenario, played step by step against a
running instance, as its people and its PSP reach it.

Each installed app that has a scenario (`AppDrills.tabletop`) plays it on a `Tabletop`
(`harness`); then the runtime plays its own steps, which need no app: deliveries to the PSP
webhook that are forged, stale, altered or replayed (`webhook_steps`). The command exits 0
only when every step holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from ramparts.tabletop.drills import AppDrills
from ramparts.tabletop.harness import Tabletop
from ramparts.tabletop.progress import Progress, Silent
from ramparts.tabletop.report import Report, Row, Verdict
from ramparts.tabletop.target import Target
from ramparts.tabletop.webhook_steps import play_webhooks

__all__ = ["run_tabletop"]


def run_tabletop(
    target: Target,
    drills: Sequence[tuple[str, AppDrills]],
    *,
    progress: Progress | None = None,
) -> Report:
    """Play every app's scenario, then the runtime's own steps; the report of every step."""
    progress = progress or Silent()
    scenarios = [(name, d.tabletop) for name, d in drills if d.tabletop is not None]
    report = Report("tabletop", "Ramparts tabletop", configuration=dict(target.description))
    progress.start(len(scenarios) + 1, "tabletop")
    tabletop = Tabletop(target)
    try:
        if not scenarios:
            tabletop.rows.append(
                Row(
                    "TT-0",
                    "An app's scenario: a malicious prompt drives a compromised model at money",
                    Verdict.NOT_IMPLEMENTED,
                    "an installed app plays the scenario (its AppDrills.tabletop)",
                    "no app the instance serves has a tabletop scenario",
                    section="Apps",
                )
            )
        for name, play in scenarios:
            tabletop.section(name)
            started = len(tabletop.rows)
            try:
                play(tabletop)
            except Exception as exc:  # noqa: BLE001 - a scenario that broke off is a FAIL
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                tabletop.rows.append(
                    Row(
                        f"{name}:stopped",
                        f"The {name} scenario plays to its end",
                        Verdict.FAIL,
                        "every step of the scenario is played",
                        f"the scenario stopped after {len(tabletop.rows) - started} steps: "
                        f"{reason}",
                    )
                )
            progress.advance(name)
        play_webhooks(tabletop)
        progress.advance("webhooks")
    finally:
        tabletop.close()
    report.rows = tabletop.rows
    report.notes = tabletop.notes
    return report
