"""The quote app's own live conformance checks, by control id: its part of the payments rows
(`payments`) and the reference app's row, EX-1 (`rollout`). The runtime checks the same
payments rows for what any app shares; a row passes only when both parts do."""

from __future__ import annotations

from collections.abc import Callable

from ramparts.quotes.drills.payments import (
    card_entry,
    idempotent_money,
    paying_rules,
    readable_books,
)
from ramparts.quotes.drills.rollout import reference_app
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.target import Target

CHECKS: dict[str, Callable[[Target], Outcome]] = {
    "PAY-1": card_entry,
    "PAY-2": paying_rules,
    "PAY-3": idempotent_money,
    "PAY-5": readable_books,
    "EX-1": reference_app,
}
