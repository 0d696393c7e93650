"""The quote app's part of the drills (`ramparts tabletop`, `redteam`, `conformance`)."""

from __future__ import annotations

from ramparts.quotes.drills.checks import CHECKS
from ramparts.quotes.drills.redteam import SURFACE
from ramparts.quotes.drills.tabletop import play
from ramparts.tabletop.drills import AppDrills

__all__ = ["DRILLS"]

DRILLS = AppDrills(tabletop=play, redteam=SURFACE, checks=CHECKS)
