"""What the three drills report: rows with a verdict, what was expected and observed, and the
evidence seen (audit event ids, statuses, counts); the red team adds a table of measures per
category. One shape, shown as a table, JSON or a self-contained HTML page (`render`)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["Measure", "Report", "Row", "Verdict", "ramparts_version"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def ramparts_version() -> str:
    try:
        return version("ramparts")
    except PackageNotFoundError:
        return "unknown"


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    FAIL = "FAIL"
    #: No real check exists for it: never counted as a pass.
    NOT_IMPLEMENTED = "NOT-IMPLEMENTED"


@dataclass
class Row:
    """One step (tabletop), category (red team) or control (conformance).

    `evidence` is what was seen, each item one short line: audit event ids as
    `audit seq <n>`, answers as `POST /path → 409 problem-type`, counts."""

    id: str
    title: str
    verdict: Verdict
    expected: str
    observed: str
    evidence: list[str] = field(default_factory=list)
    section: str = ""
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["verdict"] = self.verdict.value
        shown["seconds"] = round(self.seconds, 3)
        return shown


@dataclass
class Measure:
    """One red-team category's numbers. `unauthorized_executed` and
    `sensitive_reached_model` fail the run when not 0 (the latter is None when it could not
    be measured: a live model keeps no witness); rates are 0..1, None when nothing was there
    to rate."""

    category: str
    attempts: int = 0
    unauthorized_executed: int = 0
    sensitive_reached_model: int | None = 0
    detector_hits: int = 0
    detector_rate: float | None = None
    benign_attempts: int = 0
    benign_succeeded: int = 0
    benign_rate: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """A drill's whole report. `kind` is `tabletop`, `redteam` or `conformance`;
    `configuration` what was played against (URL, profile, model, apps, database), never a
    secret."""

    kind: str
    title: str
    rows: list[Row] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    configuration: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    generated_at: str = field(default_factory=_now)
    version: str = field(default_factory=ramparts_version)

    @property
    def passed(self) -> bool:
        """Every row passes (a NOT-IMPLEMENTED row is not a pass) and there is one at least."""
        return bool(self.rows) and all(row.verdict is Verdict.PASS for row in self.rows)

    def counts(self) -> dict[str, int]:
        return {v.value: sum(row.verdict is v for row in self.rows) for v in Verdict}

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "passed": self.passed,
            "counts": self.counts(),
            "generated_at": self.generated_at,
            "version": self.version,
            "configuration": self.configuration,
            "rows": [row.as_json() for row in self.rows],
            "measures": [measure.as_json() for measure in self.measures],
            "notes": self.notes,
        }


def host_description() -> dict[str, str]:
    """Where the drill ran (in every report's configuration)."""
    return {"python": platform.python_version(), "platform": platform.platform(terse=True)}
