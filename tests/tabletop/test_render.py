"""The drills' report as a console table, JSON and one self-contained HTML page.

The HTML is parsed, not grepped: what a browser would load or run is what the parser sees."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from ramparts.tabletop.charts import TRACK, WIDTH
from ramparts.tabletop.render import (
    CONTENT_SECURITY_POLICY,
    ReportWriteError,
    console_table,
    evidence_pieces,
    html,
    summary,
    write_outputs,
)
from ramparts.tabletop.report import Measure, Report, Row, Verdict
from tests.tabletop.samples import (
    AUDIT_IDS,
    conformance_report,
    redteam_report,
    tabletop_report,
)

SAMPLES = {
    "tabletop": tabletop_report,
    "redteam": redteam_report,
    "conformance": conformance_report,
}
HOSTILE = '<script>alert("x")</script>'
ATTRIBUTE_BREAKOUT = '" onmouseover="alert(1)" x="'
#: Attributes that make a browser fetch or navigate.
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class Page(HTMLParser):
    """Every element with its attributes, the text inside each, and all text in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.texts: list[str] = []
        self.open: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        if tag not in {"meta", "rect", "br", "hr", "img", "input", "link"}:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            if self.open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for element in self.open:
            element.text += data

    def all(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())


def parsed(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def hostile_report() -> Report:
    """Every string the page shows, from an instance that tries to run script in it."""
    report = Report(kind=HOSTILE, title=HOSTILE)
    report.configuration = {HOSTILE: HOSTILE, "url": ATTRIBUTE_BREAKOUT}
    report.rows = [
        Row(
            id=HOSTILE,
            title=HOSTILE,
            verdict=Verdict.FAIL,
            expected=HOSTILE,
            observed='<img src="https://evil.example/x.png">',
            evidence=[f"audit {AUDIT_IDS[0]} {HOSTILE}", '<a href="https://evil.example/">x</a>'],
            section=HOSTILE,
        )
    ]
    report.measures = [Measure(ATTRIBUTE_BREAKOUT + HOSTILE, attempts=3, detector_rate=0.5)]
    report.notes = [HOSTILE, "<style>@import url(https://evil.example/a.css)</style>"]
    return report


def assert_self_contained(page: Page) -> None:
    assert not page.all("script")
    for forbidden in ("link", "iframe", "object", "embed", "base", "form", "frame"):
        assert not page.all(forbidden), forbidden
    for element in page.elements:
        for name, value in element.attrs.items():
            assert not name.startswith("on"), (element.tag, name)
            if name in URL_ATTRIBUTES:
                assert value.startswith(("#", "data:")), (element.tag, name, value)
    styles = " ".join(style.text for style in page.all("style"))
    assert "@import" not in styles
    assert not re.search(r"url\((?!\s*['\"]?data:)", styles), "a stylesheet fetches a URL"


# -- HTML --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAMPLES)
def test_each_page_is_self_contained_accessible_and_forbids_script(kind: str) -> None:
    report = SAMPLES[kind]()
    page = parsed(html(report))

    assert_self_contained(page)
    (root,) = page.all("html")
    assert root.attrs["lang"] == "en"
    (title,) = page.all("title")[:1]
    assert report.title in title.text
    csp = [m for m in page.all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert [m.attrs["content"] for m in csp] == [CONTENT_SECURITY_POLICY]
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY  # falls back to 'none'
    # Every header cell says what it heads; every chart is named and described in text.
    headers = page.all("th")
    assert headers
    assert all(th.attrs.get("scope") in {"col", "row", "rowgroup"} for th in headers)
    ids = {element.attrs["id"] for element in page.elements if "id" in element.attrs}
    for svg in page.all("svg"):
        assert svg.attrs["role"] == "img"
        labelled_by = svg.attrs["aria-labelledby"].split()
        assert labelled_by
        assert set(labelled_by) <= ids


@pytest.mark.parametrize("kind", SAMPLES)
def test_the_header_shows_date_version_configuration_and_verdict(kind: str) -> None:
    report = SAMPLES[kind]()
    page = parsed(html(report))
    text = page.text

    assert report.generated_at in text
    assert f"Ramparts {report.version}" in text
    assert report.kind in text
    for key, value in report.configuration.items():
        assert f"{key} {value}" in text  # the key's header cell, then its value
    headline = "Passed" if report.passed else "Not passed"
    assert f"{headline} " in text
    for verdict, count in report.counts().items():
        assert f"{count} {verdict}" in text
    assert summary(report) in text


def test_verdict_counts_and_the_stacked_bar_match_the_report() -> None:
    report = conformance_report()
    page = parsed(html(report))
    counts = report.counts()
    assert counts == {"PASS": 22, "FAIL": 1, "NOT-IMPLEMENTED": 1}
    segments = [rect for rect in page.all("rect") if "data-verdict" in rect.attrs]

    assert {s.attrs["data-verdict"]: int(s.attrs["data-value"]) for s in segments} == counts
    widths = {s.attrs["data-verdict"]: float(s.attrs["width"]) for s in segments}
    assert sum(widths.values()) == pytest.approx(WIDTH, abs=0.05)
    for verdict, count in counts.items():
        assert widths[verdict] == pytest.approx(WIDTH * count / 24, abs=0.01)
    (desc,) = [d for d in page.all("desc") if d.attrs["id"] == "verdicts-desc"]
    assert "22 PASS, 1 FAIL, 1 NOT-IMPLEMENTED" in desc.text
    assert "Not passed" in page.text
    assert "1 FAIL, 1 NOT-IMPLEMENTED." in page.text


def test_the_red_team_charts_carry_the_measures_numbers() -> None:
    report = redteam_report()
    page = parsed(html(report))
    bars = [rect for rect in page.all("rect") if "data-series" in rect.attrs]

    def bar(category: str, series: str) -> Element:
        (found,) = [
            b
            for b in bars
            if b.attrs["data-category"] == category and b.attrs["data-series"] == series
        ]
        return found

    largest = max(m.attempts for m in report.measures)
    for m in report.measures:
        detector = bar(m.category, "detector hit rate")
        assert m.detector_rate is not None
        assert float(detector.attrs["data-value"]) == pytest.approx(m.detector_rate * 100)
        assert float(detector.attrs["width"]) == pytest.approx(TRACK * m.detector_rate, abs=0.01)
        benign = bar(m.category, "benign-task success")
        if m.benign_rate is None:
            assert "data-value" not in benign.attrs
            assert float(benign.attrs["width"]) == 0
        else:
            assert float(benign.attrs["data-value"]) == pytest.approx(m.benign_rate * 100)
        attempts = bar(m.category, "attempts")
        assert int(attempts.attrs["data-value"]) == m.attempts
        assert float(attempts.attrs["width"]) == pytest.approx(
            TRACK * m.attempts / largest, abs=0.01
        )
    # What must be zero and is not is drawn red, and written red, with its number.
    unauthorized = bar("cross-tenant-read", "unauthorized executed")
    assert int(unauthorized.attrs["data-value"]) == 1
    assert "alarm" in unauthorized.attrs["class"].split()
    sensitive = bar("pii-exfiltration", "sensitive reached the model")
    assert int(sensitive.attrs["data-value"]) == 2
    alarms = [t.text for t in page.all("tspan") if t.attrs.get("class") == "alarm"]
    assert alarms == ["1 unauthorized", "2 sensitive"]
    red_cells = [td.text for td in page.all("td") if "alarm" in td.attrs.get("class", "")]
    assert red_cells == ["1", "2"]
    assert not [
        b for b in bars if b.attrs["data-category"] == "direct-injection" and "alarm" in b.attrs
    ]
    # The numbers are text too: in each chart's description and in the table.
    (rates,) = [d for d in page.all("desc") if d.attrs["id"] == "rates-desc"]
    assert "direct-injection: 85.8 % detected, 100.0 % benign done" in rates.text
    assert "cross-tenant-read: 30.0 % detected, n/a benign done" in rates.text
    (attempts_desc,) = [d for d in page.all("desc") if d.attrs["id"] == "attempts-desc"]
    assert "cross-tenant-read: 40 attempts, 1 unauthorized, 0 sensitive" in attempts_desc.text
    assert "garak:dan 250 0 0 76.0 % (190 hits) n/a (0/0)" in page.text


def test_a_page_without_measures_has_no_red_team_charts() -> None:
    page = parsed(html(conformance_report()))
    charts = {svg.attrs["data-chart"] for svg in page.all("svg")}
    assert charts == {"verdicts"}
    assert "Red team measures" not in page.text


def test_rows_are_grouped_by_section_in_order_with_audit_ids_as_code() -> None:
    report = conformance_report()
    page = parsed(html(report))
    sections = [th.text for th in page.all("th") if th.attrs.get("scope") == "rowgroup"]
    assert sections == ["Identity", "Authorization", "Payments", "AI and platform"]
    row_ids = [th.text for th in page.all("th") if th.attrs.get("scope") == "row"]
    assert row_ids[-len(report.rows) :] == [row.id for row in report.rows]
    codes = [code.text for code in page.all("code")]
    evidenced = [row for row in report.rows if row.evidence]
    assert codes == [line.removeprefix("audit ") for row in evidenced for line in row.evidence]
    assert "NOT-IMPLEMENTED" in [span.text for span in page.all("span")]


def test_rows_without_sections_have_no_section_headers() -> None:
    page = parsed(html(redteam_report()))
    assert not [th for th in page.all("th") if th.attrs.get("scope") == "rowgroup"]


def test_every_hostile_string_comes_out_as_text() -> None:
    report = hostile_report()
    raw = html(report)
    page = parsed(raw)

    assert_self_contained(page)
    assert not page.all("img")
    assert not page.all("a")
    assert len(page.all("style")) == 1
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in raw
    assert HOSTILE in page.text  # shown, as text
    assert "@import url(https://evil.example/a.css)" in page.text
    # The id in a hostile evidence line is still shown as an id.
    assert AUDIT_IDS[0] in [code.text for code in page.all("code")]
    assert ATTRIBUTE_BREAKOUT + HOSTILE in [
        rect.attrs.get("data-category") for rect in page.all("rect")
    ]
    assert "not passed" in page.text.lower()


def test_an_empty_report_does_not_pass_and_says_so() -> None:
    report = Report(kind="conformance", title="Nothing ran")
    page = parsed(html(report))
    assert_self_contained(page)
    assert "Not passed Nothing was checked." in page.text
    assert "no rows" in page.text
    assert "0 PASS, 0 FAIL, 0 NOT-IMPLEMENTED" in page.text


def test_evidence_pieces_mark_every_uuid() -> None:
    line = f"approval {AUDIT_IDS[1]} after audit {AUDIT_IDS[2]}"
    pieces = [(piece.text, piece.is_id) for piece in evidence_pieces(line)]
    assert pieces == [
        ("approval ", False),
        (AUDIT_IDS[1], True),
        (" after audit ", False),
        (AUDIT_IDS[2], True),
    ]
    assert [(p.text, p.is_id) for p in evidence_pieces("POST /x → 409")] == [
        ("POST /x → 409", False)
    ]


# -- Console -----------------------------------------------------------------------------------


def console(width: int = 100, *, colour: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    if colour:
        return Console(file=out, width=width, force_terminal=True, color_system="standard"), out
    return Console(file=out, width=width, color_system=None), out


@pytest.mark.parametrize("kind", SAMPLES)
def test_the_console_table_shows_every_row_whole_at_100_columns(kind: str) -> None:
    report = SAMPLES[kind]()
    screen, out = console()
    console_table(report, screen)
    text = out.getvalue()
    lines = text.splitlines()

    assert all(len(line) <= 100 for line in lines)
    for row in report.rows:
        # An id is never cut or folded: it is on one line, whole.
        assert any(re.search(rf"│ {re.escape(row.id)} +│", line) for line in lines), row.id
        assert any(f"{row.verdict.value} " in line for line in lines)
        for evidence in row.evidence:
            uuid = evidence.split()[-1]
            assert any(uuid in line for line in lines), uuid
    assert lines[-1].startswith(summary(report))
    assert ("(passed:" in lines[-1]) is report.passed
    for note in report.notes:
        assert f"note: {note}" in text


def test_the_console_shows_the_red_team_measures() -> None:
    report = redteam_report()
    screen, out = console()
    console_table(report, screen)
    text = out.getvalue()
    assert "Red team, per category" in text
    assert re.search(r"│ cross-tenant-read +│ +40 │ +1 │ +0 │ +30\.0 │ +n/a │", text)
    assert re.search(
        r"│ indirect-injection:proposal +│ +96 │ +0 │ +0 │ +74\.0 │ +91\.7 \(11/12\) │", text
    )
    assert text.splitlines()[-1] == "3 PASS, 2 FAIL, 0 NOT-IMPLEMENTED (not passed: 2 FAIL)"


def test_verdicts_are_coloured_on_a_terminal() -> None:
    report = conformance_report()
    screen, out = console(colour=True)
    console_table(report, screen)
    text = out.getvalue()
    assert "\x1b[1;32mPASS" in text
    assert "\x1b[1;31mFAIL" in text
    assert "\x1b[1;33mNOT-IMPLEMENTED" in text


def test_a_hostile_string_cannot_drive_the_terminal() -> None:
    report = Report(kind="redteam", title="[bold]markup[/bold] \x1b]52;c;ZXZpbA==\x07")
    report.rows = [Row("\x1b[2J", "title \x1b[8m", Verdict.PASS, "e", "o", ["\x9b31m red"])]
    screen, out = console(colour=True)
    console_table(report, screen)
    text = out.getvalue()
    assert "\x1b]" not in text
    assert "\x1b[2J" not in text
    assert "\x1b[8m" not in text
    assert "\x9b" not in text
    assert "\x07" not in text
    assert "\\x1b]52;c;ZXZpbA==\\x07" in text
    assert "[bold]markup[/bold]" in text  # shown as typed, not read as Rich markup


# -- Output ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAMPLES)
def test_json_on_stdout_round_trips(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    report = SAMPLES[kind]()
    screen, out = console()
    write_outputs(report, console=screen, as_json=True, html_path=None)
    printed = capsys.readouterr().out
    assert json.loads(printed) == report.as_json()
    assert out.getvalue() == ""  # no table besides the JSON


def test_without_json_the_table_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    screen, out = console()
    write_outputs(tabletop_report(), console=screen, as_json=False, html_path=None)
    assert capsys.readouterr().out == ""
    assert "4 PASS, 0 FAIL, 0 NOT-IMPLEMENTED" in out.getvalue()


def test_the_html_is_written_atomically_readable_by_all(tmp_path: Path) -> None:
    report = redteam_report()
    target = tmp_path / "report.html"
    target.write_text("an older report")
    old_umask = os.umask(0o077)
    try:
        write_outputs(report, console=console()[0], as_json=False, html_path=target)
    finally:
        os.umask(old_umask)
    assert target.read_text() == html(report)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a-directory", "it is a directory"),
        ("missing/report.html", "No such file or directory"),
        ("a-file/report.html", "Not a directory"),
    ],
)
def test_an_unwritable_path_is_one_line_and_leaves_nothing(
    tmp_path: Path, where: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "a-file").write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    target = tmp_path / where
    report = tabletop_report()

    with pytest.raises(ReportWriteError) as raised:
        write_outputs(report, console=console()[0], as_json=True, html_path=target)
    message = str(raised.value)
    assert message == f"cannot write the HTML report to {target}: {reason}"
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    # The drill's result was shown before the page failed.
    assert json.loads(capsys.readouterr().out) == report.as_json()


def test_a_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ReportWriteError, match="No space left on device"):
        write_outputs(
            tabletop_report(), console=console()[0], as_json=False, html_path=tmp_path / "r.html"
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "leaky",
    [
        '<img src="https://cdn.example/logo.png">',
        "<script>1</script>",
        '<a href="https://example.com/">x</a>',
        "<style>body { background: url(https://example.com/x.png) }</style>",
        '<svg><image xlink:href="//example.com/x.svg"/></svg>',
        '<p onclick="x()">x</p>',
    ],
)
def test_the_self_contained_check_would_fail(leaky: str) -> None:
    with pytest.raises(AssertionError):
        assert_self_contained(parsed(f"<html lang='en'><body>{leaky}</body></html>"))
