"""The geometry of the HTML report's charts: where each bar goes and what number it shows.

Only numbers and plain strings leave this module; the template draws them as inline SVG with
autoescaping, so a hostile category name is text, never markup. Every chart carries its numbers
in a text description too (a chart is never the only carrier)."""

from __future__ import annotations

from dataclasses import dataclass

from ramparts.tabletop.report import Measure, Verdict

__all__ = [
    "AttemptsChart",
    "RatesChart",
    "Segment",
    "VerdictBar",
    "attempts_chart",
    "rates_chart",
    "verdict_bar",
]

#: The drawing's own units: about the page's width, so 12 units of text read as 12 px.
WIDTH = 1040
LABEL_WIDTH = 220
TEXT_ROOM = 320  # right of the longest bar, for its numbers
TRACK = WIDTH - LABEL_WIDTH - TEXT_ROOM
BAR_HEIGHT = 14
BAR_GAP = 3
GROUP_GAP = 12
LABEL_CHARS = 30  # a longer category name is shortened on the chart; the table has it whole
#: A count that must be zero and is not stays visible however small against the attempts.
ALARM_MIN_WIDTH = 4.0


@dataclass(frozen=True)
class Segment:
    """A part of a bar: `name` what it counts, `value` the count, `x`/`width` where it is."""

    name: str
    value: int
    x: float
    width: float


@dataclass(frozen=True)
class VerdictBar:
    """The verdicts as one bar split by count."""

    width: float
    height: float
    segments: list[Segment]
    description: str


@dataclass(frozen=True)
class Rate:
    """One rate bar; `value` in percent, None when there was nothing to rate."""

    series: str
    value: float | None
    text: str
    y: float
    width: float


@dataclass(frozen=True)
class RateGroup:
    label: str
    full_label: str
    y: float
    rates: list[Rate]


@dataclass(frozen=True)
class RatesChart:
    """Per category, its rates as horizontal bars on a 0-100 % scale."""

    key: str
    title: str
    description: str
    series: list[str]
    groups: list[RateGroup]
    width: float
    height: float
    label_width: float = LABEL_WIDTH
    track_width: float = TRACK


@dataclass(frozen=True)
class Count:
    """A number written beside a bar; `alarm` when it must be zero and is not."""

    text: str
    alarm: bool


@dataclass(frozen=True)
class AttemptsLane:
    """One category: its attempts as a bar, what got through drawn red at the bar's start."""

    label: str
    full_label: str
    y: float
    attempts: int
    width: float
    breaches: list[Segment]
    counts: list[Count]


@dataclass(frozen=True)
class AttemptsChart:
    key: str
    title: str
    description: str
    lanes: list[AttemptsLane]
    width: float
    height: float
    label_width: float = LABEL_WIDTH
    track_width: float = TRACK


def verdict_bar(counts: dict[str, int]) -> VerdictBar:
    """PASS, FAIL and NOT-IMPLEMENTED side by side, each as wide as its share of the rows."""
    total = sum(counts.values())
    segments: list[Segment] = []
    x = 0.0
    for verdict in Verdict:
        count = counts.get(verdict.value, 0)
        width = WIDTH * count / total if total else 0.0
        segments.append(Segment(verdict.value, count, x, width))
        x += width
    described = ", ".join(f"{s.value} {s.name}" for s in segments)
    return VerdictBar(WIDTH, 28, segments, f"Verdicts of {total} rows: {described}.")


def percent(rate: float | None) -> str:
    """A 0..1 rate as the report writes it; n/a when nothing was there to rate."""
    return "n/a" if rate is None else f"{rate * 100:.1f} %"


def rates_chart(measures: list[Measure]) -> RatesChart:
    """Detector hit rate and benign-task success per category."""
    title = "Detector hit rate and benign-task success per category"
    series = ["detector hit rate", "benign-task success"]
    groups: list[RateGroup] = []
    described: list[str] = []
    y = 0.0
    for m in measures:
        texts = [f"{percent(m.detector_rate)} detected", f"{percent(m.benign_rate)} benign done"]
        rates = [
            Rate(
                series=name,
                value=None if rate is None else rate * 100,
                text=text,
                y=y + offset * (BAR_HEIGHT + BAR_GAP),
                width=0.0 if rate is None else TRACK * min(max(rate, 0.0), 1.0),
            )
            for offset, (name, rate, text) in enumerate(
                zip(series, (m.detector_rate, m.benign_rate), texts, strict=True)
            )
        ]
        groups.append(RateGroup(_shortened(m.category), m.category, y, rates))
        described.append(f"{m.category}: {', '.join(texts)}")
        y += len(rates) * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP
    return RatesChart(
        key="rates",
        title=title,
        description=_described(title, described),
        series=series,
        groups=groups,
        width=WIDTH,
        height=max(y - GROUP_GAP, BAR_HEIGHT),
    )


def attempts_chart(measures: list[Measure]) -> AttemptsChart:
    """Attempts per category on one scale; unauthorized actions executed and sensitive data
    that reached the model, which must both be zero, in red from the bar's start."""
    title = "Attempts per category, and what got through (must be 0)"
    scale = max((m.attempts for m in measures), default=0) or 1
    lanes: list[AttemptsLane] = []
    described: list[str] = []
    y = 0.0
    for m in measures:
        breaches: list[Segment] = []
        x = 0.0
        sensitive = m.sensitive_reached_model
        for name, count in (
            ("unauthorized executed", m.unauthorized_executed),
            ("sensitive reached the model", sensitive or 0),
        ):
            if count:
                width = min(max(TRACK * count / scale, ALARM_MIN_WIDTH), TRACK - x)
                breaches.append(Segment(name, count, x, width))
                x += width
        counts = [
            Count(f"{m.attempts} attempts", alarm=False),
            Count(f"{m.unauthorized_executed} unauthorized", alarm=m.unauthorized_executed != 0),
            Count(
                "sensitive not measured" if sensitive is None else f"{sensitive} sensitive",
                alarm=bool(sensitive),
            ),
        ]
        width = TRACK * min(max(m.attempts, 0), scale) / scale
        lanes.append(
            AttemptsLane(_shortened(m.category), m.category, y, m.attempts, width, breaches, counts)
        )
        described.append(f"{m.category}: {', '.join(count.text for count in counts)}")
        y += BAR_HEIGHT + GROUP_GAP
    return AttemptsChart(
        key="attempts",
        title=title,
        description=_described(title, described),
        lanes=lanes,
        width=WIDTH,
        height=max(y - GROUP_GAP, BAR_HEIGHT),
    )


def _described(title: str, parts: list[str]) -> str:
    return f"{title}. " + "; ".join(parts) + "." if parts else f"{title}: none."


def _shortened(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
