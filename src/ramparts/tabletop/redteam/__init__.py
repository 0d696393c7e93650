"""The red team (`ramparts redteam`, AI-4): adversarial corpora replayed against the running
system with a compromised model, as user input and as untrusted content, for every app that
declares where attacks land (`RedTeamSurface`)."""

from __future__ import annotations

from ramparts.tabletop.redteam.people import Restraint
from ramparts.tabletop.redteam.runner import (
    DRILL_ENVIRONMENT,
    RedTeamRun,
    red_team,
    run_redteam,
    surfaces,
)
from ramparts.tabletop.redteam.surface import (
    EXECUTED,
    HELD,
    REFUSED,
    Call,
    PlantRefused,
    Records,
    RedTeamSurface,
    Scene,
)

__all__ = [
    "DRILL_ENVIRONMENT",
    "EXECUTED",
    "HELD",
    "REFUSED",
    "Call",
    "PlantRefused",
    "Records",
    "RedTeamRun",
    "RedTeamSurface",
    "Restraint",
    "Scene",
    "red_team",
    "run_redteam",
    "surfaces",
]
