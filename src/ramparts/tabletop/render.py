"""Placeholder until the renderers land: JSON, a plain table and a bare HTML page."""

from __future__ import annotations

import html as _html
import json
from pathlib import Path

from rich.console import Console

from ramparts.tabletop.report import Report

__all__ = ["ReportWriteError", "write_outputs"]


class ReportWriteError(Exception):
    pass


def write_outputs(
    report: Report, *, console: Console, as_json: bool, html_path: Path | None
) -> None:
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        for row in report.rows:
            console.print(f"{row.verdict.value:16} {row.id:8} {row.title}: {row.observed}")
            for line in row.evidence:
                console.print(f"{'':26}{line}", highlight=False)
    if html_path is not None:
        try:
            html_path.write_text(
                f"<pre>{_html.escape(json.dumps(report.as_json(), indent=1))}</pre>"
            )
        except OSError as exc:
            raise ReportWriteError(f"cannot write {html_path}: {exc.strerror}") from None
