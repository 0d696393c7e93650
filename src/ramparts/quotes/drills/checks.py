"""The quote app's own live conformance checks, by control id."""

from __future__ import annotations

from collections.abc import Callable

from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.target import Target

CHECKS: dict[str, Callable[[Target], Outcome]] = {}
