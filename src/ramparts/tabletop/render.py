"""How a drill's report is shown: a Rich table on the console, JSON, or one self-contained HTML
page that a reviewer can keep as evidence.

The evidence comes from the instance under test, which may be hostile: the HTML template
autoescapes everything, the page loads nothing from anywhere, and its Content-Security-Policy
forbids script, so a string in a report can never run when the page is opened."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ramparts.tabletop.charts import attempts_chart, percent, rates_chart, verdict_bar
from ramparts.tabletop.report import Measure, Report, Row, Verdict

__all__ = [
    "ReportWriteError",
    "console_table",
    "html",
    "reason",
    "summary",
    "write_html",
    "write_outputs",
]

TEMPLATES = Path(__file__).parent / "templates"
#: No script, no fetch of any kind; inline styles only (the page's own CSS and the SVG's).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)
VERDICT_STYLE = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.NOT_IMPLEMENTED: "bold yellow",
}
UUID = re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b")
#: Longer ids (a red-team category can be long) fold onto a second line, never cut.
ID_MAX_WIDTH = 30
#: C0 and C1 control characters (an escape sequence starts with one); every field is one line.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class ReportWriteError(Exception):
    """The HTML report could not be written where asked (one line, for the CLI to show)."""


def summary(report: Report) -> str:
    """The counts in one line, e.g. `21 PASS, 0 FAIL, 0 NOT-IMPLEMENTED`."""
    return ", ".join(f"{count} {verdict}" for verdict, count in report.counts().items())


def reason(report: Report) -> str:
    """Why the report passed or not, in a few words."""
    if report.passed:
        return f"all {len(report.rows)} hold"
    if not report.rows:
        return "nothing was checked"
    counts = report.counts()
    failing = (Verdict.FAIL, Verdict.NOT_IMPLEMENTED)
    return ", ".join(f"{counts[v.value]} {v.value}" for v in failing if counts[v.value])


# -- Console -----------------------------------------------------------------------------------


def console_table(report: Report, console: Console) -> None:
    """The rows as a table (then the red team's measures) and a one-line summary.

    Each row's title, expected, observed and evidence share one column: at 100 columns that
    column still holds a full audit event id (`audit <uuid>`) on one line."""
    rows = Table(
        title=Text.assemble(
            (_printable(report.title), "bold"),
            "\n",
            (
                f"{_printable(report.kind)} · Ramparts {report.version} · {report.generated_at}",
                "dim",
            ),
        ),
        show_lines=True,
        expand=True,
    )
    rows.add_column("ID", style="bold", max_width=ID_MAX_WIDTH, overflow="fold")
    rows.add_column("Verdict", no_wrap=True)
    rows.add_column("Check: expected, observed, evidence", ratio=1, overflow="fold")
    for row in report.rows:
        rows.add_row(
            Text(_printable(row.id)),
            Text(row.verdict.value, style=VERDICT_STYLE[row.verdict]),
            _details(row),
        )
    console.print(rows)
    if report.measures:
        console.print(_measures_table(report.measures))
    for note in report.notes:
        console.print(Text(f"note: {_printable(note)}", style="dim"))
    style = "green" if report.passed else "red" if report.counts()["FAIL"] else "yellow"
    passed = "passed" if report.passed else "not passed"
    console.print(Text(f"{summary(report)} ({passed}: {reason(report)})", style=f"bold {style}"))


def _details(row: Row) -> Group:
    lines = [
        Text(_printable(row.title), style="bold"),
        Text.assemble(("expected ", "dim"), _printable(row.expected)),
        Text.assemble(("observed ", "dim"), _printable(row.observed)),
    ]
    lines += [Text.assemble(("• ", "dim"), _printable(line)) for line in row.evidence]
    return Group(*lines)


def _printable(text: str) -> str:
    """Control characters shown as escapes: a hostile string cannot drive the terminal."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _measures_table(measures: list[Measure]) -> Table:
    # The numbers get the widths they need; the category takes the rest and folds if longer.
    table = Table(title="Red team, per category", expand=True)
    table.add_column("Category", ratio=1, overflow="fold")
    table.add_column("Attempts", justify="right", width=8)
    table.add_column("Unauthorized\nexecuted", justify="right", width=12)
    table.add_column("PII/secrets\nto model", justify="right", width=11)
    table.add_column("Detector\nhit %", justify="right", width=8)
    table.add_column("Benign\nsuccess %", justify="right", width=15)
    for m in measures:
        table.add_row(
            Text(_printable(m.category)),
            str(m.attempts),
            _must_be_zero(m.unauthorized_executed),
            _must_be_zero(m.sensitive_reached_model),
            _rate(m.detector_rate),
            _rate(m.benign_rate, f" ({m.benign_succeeded}/{m.benign_attempts})"),
        )
    return table


def _must_be_zero(count: int | None) -> Text:
    if count is None:
        return Text("not measured", style="yellow")
    return Text(str(count), style="bold red" if count else "green")


def _rate(rate: float | None, detail: str = "") -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}{detail}"


# -- HTML --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Part of an evidence line: an id (shown as code) or the text around it."""

    text: str
    is_id: bool


def evidence_pieces(line: str) -> list[Piece]:
    """A line split so that every UUID in it (audit event ids) can be shown as code."""
    pieces: list[Piece] = []
    at = 0
    for match in UUID.finditer(line):
        if match.start() > at:
            pieces.append(Piece(line[at : match.start()], is_id=False))
        pieces.append(Piece(match.group(), is_id=True))
        at = match.end()
    if at < len(line):
        pieces.append(Piece(line[at:], is_id=False))
    return pieces


def _sections(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by section, in the order sections first appear."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row.section, []).append(row)
    return list(grouped.items())


def html(report: Report) -> str:
    """The report as one HTML page that needs nothing else: inline CSS, inline SVG, no script."""
    return _templates.get_template("report.html").render(
        report=report,
        csp=CONTENT_SECURITY_POLICY,
        counts=report.counts(),
        summary=summary(report),
        reason=reason(report),
        sections=_sections(report.rows),
        verdict_bar=verdict_bar(report.counts()),
        rates=rates_chart(report.measures),
        attempts=attempts_chart(report.measures),
        pieces=evidence_pieces,
        percent=percent,
    )


# -- Output ------------------------------------------------------------------------------------


def write_outputs(
    report: Report, *, console: Console, as_json: bool, html_path: Path | None
) -> None:
    """Show the report (JSON on stdout, or the table) and, when asked, write the HTML page.

    The report is shown first: a drill that ran is not lost because the page could not be
    written; the error then says why in one line."""
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        console_table(report, console)
    if html_path is not None:
        write_html(report, html_path)


def write_html(report: Report, path: Path) -> None:
    """Write the page atomically (a temporary file beside it, then a rename), mode 0644."""
    if path.is_dir():
        raise ReportWriteError(f"cannot write the HTML report to {path}: it is a directory")
    page = html(report).encode()
    folder = path.parent
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise ReportWriteError(
            f"cannot write the HTML report to {path}: {error.strerror or error}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(page)
            file.flush()
            os.fsync(file.fileno())
            os.fchmod(file.fileno(), 0o644)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ReportWriteError(
            f"cannot write the HTML report to {path}: {error.strerror or error}"
        ) from None
