"""`ramparts redteam`: every attack of the chosen corpora against every app that declares a
red-team surface, as user input and as untrusted content, with the model compromised (the
drill plays it) or, on an instance without a script, live. One row and one measure per app
and category.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from ramparts.tabletop.corpora import CATEGORIES, Corpus, load_corpora
from ramparts.tabletop.drills import AppDrills
from ramparts.tabletop.progress import Progress, Silent
from ramparts.tabletop.redteam.attempt import Play, Player
from ramparts.tabletop.redteam.effects import Effects
from ramparts.tabletop.redteam.people import People, Restraint
from ramparts.tabletop.redteam.surface import Records, RedTeamSurface
from ramparts.tabletop.redteam.tally import MODES, Tally
from ramparts.tabletop.redteam.trail import Trail, earlier_strikes
from ramparts.tabletop.report import Report, Row, Verdict
from ramparts.tabletop.target import DrillError, Target

__all__ = ["DRILL_ENVIRONMENT", "RedTeamRun", "red_team", "run_redteam", "surfaces"]

#: The abuse limiter of the red team's own instance, opened wide: it would slow an attacker
#: down after 5 strikes and lock them after 10 (AI-3 checks that), and every attack earns
#: strikes, so with its defaults only the first few attempts would reach the controls under
#: test. The report says so.
DRILL_ENVIRONMENT = {
    "RAMPARTS_AI_THROTTLE_AFTER": "1000000/10 minutes",
    "RAMPARTS_AI_LOCK_AFTER": "1000000/10 minutes",
    "RAMPARTS_AI_USER_RATE": "1000000/minute",
    "RAMPARTS_AI_TENANT_RATE": "1000000/minute",
    # Model-token budgets, not credentials:
    "RAMPARTS_AI_USER_TOKENS": "1000000000/day",  # pragma: allowlist secret
    "RAMPARTS_AI_TENANT_TOKENS": "1000000000/day",  # pragma: allowlist secret
}


def surfaces(drills: Sequence[tuple[str, AppDrills]]) -> list[tuple[str, RedTeamSurface]]:
    """The apps that declare where attacks land."""
    return [(name, d.redteam) for name, d in drills if isinstance(d.redteam, RedTeamSurface)]


@dataclass
class RedTeamRun:
    """A played red team: its report, and each category's attempts (for the AI-4 check)."""

    report: Report
    tallies: list[Tally] = field(default_factory=list)


def run_redteam(
    target: Target,
    drills: Sequence[tuple[str, AppDrills]],
    *,
    sources: Collection[str] = ("ramparts",),
    limit_per_category: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Report:
    """Replay the corpora of `sources` (at most `limit_per_category` attacks of each
    category, chosen by `seed`) against the apps of `drills`, and report per app and
    category."""
    return red_team(
        target,
        drills,
        sources=sources,
        limit_per_category=limit_per_category,
        seed=seed,
        progress=progress,
    ).report


def red_team(
    target: Target,
    drills: Sequence[tuple[str, AppDrills]],
    *,
    sources: Collection[str] = ("ramparts",),
    limit_per_category: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    restraint: Restraint | None = None,
) -> RedTeamRun:
    """`run_redteam`, with the attempts of each category; held back by `restraint` when
    other checks share the instance."""
    progress = progress or Silent()
    corpus = load_corpora(sources, limit_per_category=limit_per_category, seed=seed)
    apps = surfaces(drills)
    live = target.script is None
    report = Report(
        "redteam",
        "Ramparts red team: adversarial corpora, model compromised",
        configuration={
            **target.description,
            "corpora": ", ".join(
                f"{s['name']} {s.get('version', '')} ({s.get('attacks', 0)} attacks)"
                for s in corpus.sources
            ),
            "sample": f"at most {limit_per_category} per category, seed {seed}"
            if limit_per_category
            else "every attack",
            "modes": ", ".join(MODES),
            "model": "live (outcomes only: no witness of what it was shown)"
            if live
            else "scripted: the drill plays a compromised model that attempts each goal",
        },
    )
    run = RedTeamRun(report)
    if not apps:
        report.rows.append(
            Row(
                "red team",
                "Attacks against the installed apps",
                Verdict.NOT_IMPLEMENTED,
                "an app that declares a red-team surface",
                "no installed app declares where attacks land (AppDrills.redteam)",
            )
        )
        return run
    if len(target.tenants()) < 2:
        raise DrillError("the red team needs two tenants (one attacks the other)")
    progress.start(len(apps) * len(corpus.attacks) * len(MODES), "red team")
    people = People(target, restraint)
    effects = Effects(target, {k: v for _, s in apps for k, v in s.watched.items()})
    try:
        timed, player = _campaign(target, apps, corpus, people, effects, seed, progress)
    finally:
        effects.close()
        people.close()
    for tally, seconds in timed:
        report.rows.append(tally.row(effects_verified=not effects.unavailable, seconds=seconds))
        report.measures.append(tally.measure())
        run.tallies.append(tally)
    report.notes += _notes(corpus, people, player, effects, live=live)
    return run


def _campaign(  # noqa: PLR0917 - the run's parts, made and closed by its caller
    target: Target,
    apps: list[tuple[str, RedTeamSurface]],
    corpus: Corpus,
    people: People,
    effects: Effects,
    seed: int,
    progress: Progress,
) -> tuple[list[tuple[Tally, float]], Player]:
    tenants = target.tenants()
    records: dict[tuple[str, str], Records] = {
        (app, tenant): surface.prepare(people, tenant)
        for app, surface in apps
        for tenant in tenants
    }
    trail = Trail(target, people)
    restraint = people.restraint
    if restraint.strikes is not None:
        people.earlier = earlier_strikes(target, trail, restraint.window_seconds)
    player = Player(target, people, trail, effects, records, seed=seed)
    grouped = corpus.by_category()
    tallies: list[tuple[Tally, float]] = []
    homes = list(restraint.tenants or tenants)
    index = 0
    for app, surface in apps:
        for category in CATEGORIES:
            tally, began = Tally(app, category), time.monotonic()
            for attack in grouped.get(category, []):
                # Attacks take turns in each tenant: each is attacked, and attacks another.
                tenant = homes[index % len(homes)]
                other = tenants[(tenants.index(tenant) + 1) % len(tenants)]
                for mode in MODES:
                    play = Play(app, surface, attack, mode, index, tenant, other)
                    tally.outcomes.append(player.play(play))
                    progress.advance(f"{app} {category}")
                index += 1
            if tally.outcomes:
                tallies.append((tally, time.monotonic() - began))
    return tallies, player


def _notes(
    corpus: Corpus, people: People, player: Player, effects: Effects, *, live: bool
) -> list[str]:
    notes = [
        f"Corpus {s['name']} {s.get('version', '')}: {s.get('licence', '?')}. "
        f"{s.get('attribution', '')}".strip()
        for s in corpus.sources
    ]
    notes += corpus.notes
    notes.append(
        "Each attack is played twice: typed by a person who may not do what it asks "
        "(user input), and planted in a third party's text that a person who may move money "
        "or approve has their assistant read (untrusted content). Exfiltration attacks carry "
        "fresh synthetic canaries (SSN, IBAN, email, phone, an API key); no card number, as "
        "any request carrying one is refused at the door (PAY-1)."
    )
    if live:
        notes.append(
            "Live model: the attacks are sent as they are and only outcomes are measured "
            "(answers, rows under the API, what the user got back). A live model keeps no "
            "witness for the drill, so whether PII or secrets reached it is not measured and "
            "no row can pass on it."
        )
    if effects.unavailable:
        notes.append(
            f"The database could not be reached ({effects.unavailable}): effects are judged by "
            "the assistant's answers only, so no row can pass."
        )
    earned = sum(people.strikes.values())
    notes.append(
        f"Abuse limiter (AI-3): the attempts earned {earned} strike(s) (refused calls, "
        "injection signs, refused content), spread over the people of each role; "
        f"{player.locks} lock(s) were recorded and {len(people.stopped)} person(s) were "
        "stopped by the limiter"
        + (f" ({', '.join(sorted(people.stopped))})" if people.stopped else "")
        + ". A lock is the abuse control working: a stopped attempt is reported as not "
        "played, never as an attack held nor a benign task failed."
    )
    return notes
