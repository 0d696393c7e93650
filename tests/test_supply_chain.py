"""The supply-chain gates of `scripts/supply-chain` (control PLT-2), run as CI runs them.

pip-audit queries a stand-in for the OSV API on loopback that speaks its wire format
(`POST /v1/query` with a package and version, answered with OSV records), since this machine
has no route to api.osv.dev; bandit runs for real over the sources and over planted copies.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / "scripts" / "supply-chain"
REQUIRE_VULN_DB = "SUPPLY_CHAIN_REQUIRE_VULN_DB"

#: The real advisory for Jinja2 before 2.11.3 (ReDoS in `urlize`), as OSV serves it: the
#: GitHub advisory and the PyPI advisory database's record of the same CVE.
JINJA2_REDOS = [
    {
        "schema_version": "1.6.0",
        "id": "GHSA-g3rq-g295-4j3m",
        "modified": "2024-09-26T17:23:29Z",
        "published": "2021-03-19T21:28:05Z",
        "aliases": ["CVE-2020-28493"],
        "summary": "Regular Expression Denial of Service (ReDoS) in Jinja2",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "jinja2", "purl": "pkg:pypi/jinja2"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.11.3"}]}
                ],
            }
        ],
    },
    {
        "schema_version": "1.6.0",
        "id": "PYSEC-2021-66",
        "modified": "2021-03-04T21:15:00Z",
        "published": "2021-02-01T20:15:00Z",
        "aliases": ["CVE-2020-28493", "GHSA-g3rq-g295-4j3m"],
        "details": "This affects the package jinja2 from 0.0.0 and before 2.11.3. The ReDoS "
        "vulnerability is mainly due to the `_punctuation_re regex` operator.",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "jinja2", "purl": "pkg:pypi/jinja2"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.11.3"}]}
                ],
                "versions": ["2.11.0", "2.11.1", "2.11.2"],
            }
        ],
    },
]
VULNERABLE_LOCK = """\
# A lock with a vulnerable pin (the planted problem) and a clean one.
jinja2==2.11.2
    # via -r requirements.in
markupsafe==2.1.5
    # via jinja2
"""


class OsvStandIn:
    """The OSV query API on loopback: known records for `vulnerable`, `{}` for the rest."""

    def __init__(self, vulnerable: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        self.queries: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/v1/query":
                    self.send_error(404)
                    return
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.queries.append(query)
                key = (query["package"]["name"], query["version"])
                body = json.dumps({"vulns": vulnerable[key]} if key in vulnerable else {})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def osv() -> Iterator[OsvStandIn]:
    stand_in = OsvStandIn({("jinja2", "2.11.2"): JINJA2_REDOS})
    yield stand_in
    stand_in.close()


def gate(
    *args: str, report: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    environment = {k: v for k, v in os.environ.items() if k != REQUIRE_VULN_DB} | (env or {})
    done = subprocess.run(
        [sys.executable, str(GATE), *args, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )
    return done, json.loads(report.read_text())


def ignore_file(directory: Path, **entry: object) -> Path:
    path = directory / "audit-ignore.toml"
    lines = ["[[ignore]]"]
    for key, value in entry.items():
        lines.append(f"{key} = {value if isinstance(value, dt.date) else json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def vulnerable_lock(tmp_path: Path) -> Path:
    lock = tmp_path / "vulnerable.lock"
    lock.write_text(VULNERABLE_LOCK)
    return lock


def audit_args(lock: Path, osv: OsvStandIn, ignore: Path) -> list[str]:
    return ["audit", "--lock", str(lock), "--osv-url", osv.url, "--ignore-file", str(ignore)]


def test_a_vulnerable_pin_fails_the_audit(
    tmp_path: Path, osv: OsvStandIn, vulnerable_lock: Path
) -> None:
    done, report = gate(
        *audit_args(vulnerable_lock, osv, tmp_path / "none.toml"), report=tmp_path / "r.json"
    )
    assert done.returncode == 1, done.stderr
    failures = [line for line in done.stderr.splitlines() if line.startswith("pip-audit: FAIL")]
    # pip-audit merges the records of one advisory (their aliases overlap) into one finding.
    assert failures == [
        "pip-audit: FAIL: jinja2 2.11.2 PYSEC-2021-66 (CVE-2020-28493, GHSA-g3rq-g295-4j3m): "
        "fixed in: 2.11.3"
    ]
    assert "PASS" not in done.stdout + done.stderr
    assert report["exit"] == 1
    assert report["audit"]["status"] == "FAIL"
    assert report["audit"]["packages"] == 2
    assert report["audit"]["not_audited"] == []
    assert [
        (finding["package"], finding["version"], finding["id"], finding["fix_versions"])
        for finding in report["audit"]["findings"]
    ] == [("jinja2", "2.11.2", "PYSEC-2021-66", ["2.11.3"])]
    # Every locked pin was asked about, as OSV's API expects it.
    assert sorted(osv.queries, key=lambda query: query["package"]["name"]) == [
        {"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.11.2"},
        {"package": {"name": "markupsafe", "ecosystem": "PyPI"}, "version": "2.1.5"},
    ]


def test_a_reviewed_ignore_entry_lets_it_pass(
    tmp_path: Path, osv: OsvStandIn, vulnerable_lock: Path
) -> None:
    until = dt.date.today() + dt.timedelta(days=30)
    ignore = ignore_file(
        tmp_path,
        id="CVE-2020-28493",  # an alias matches each record of the advisory
        package="Jinja2",
        reason="urlize is never called on untrusted text",
        expires=until,
    )
    done, report = gate(*audit_args(vulnerable_lock, osv, ignore), report=tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert "pip-audit: PASS: 2 packages audited, 1 known vulnerability(ies) ignored" in done.stdout
    assert (
        "pip-audit: ignored: jinja2 2.11.2 PYSEC-2021-66 (CVE-2020-28493, GHSA-g3rq-g295-4j3m): "
        f"urlize is never called on untrusted text (until {until.isoformat()})"
    ) in done.stdout
    assert report["audit"]["status"] == "PASS"
    assert all(finding["ignored_because"] for finding in report["audit"]["findings"])


#: A date inside the 90-day review window, for the entries whose problem is something else.
SOON = dt.date.today() + dt.timedelta(days=30)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            {"reason": "reviewed last year", "expires": dt.date(2025, 1, 31)},
            "audit-ignore.toml: entry 1 (CVE-2020-28493): expired on 2025-01-31: review it again",
        ),
        (
            {"reason": "  ", "expires": SOON},
            "entry 1 (CVE-2020-28493): needs reason",
        ),
        (
            {"expires": SOON},
            "audit-ignore.toml: entry 1 (CVE-2020-28493): needs reason",
        ),
        (
            {"reason": "no longer matters", "expires": SOON, "package": "django"},
            "entry 1 (CVE-2020-28493): django is no longer locked: remove the entry",
        ),
        (
            {"reason": "a typo", "expires": "2099-01-01"},
            "entry 1 (CVE-2020-28493): expires must be a date such as 2027-01-31",
        ),
        (
            {"reason": "r", "expires": SOON, "reviewer": "me"},
            "entry 1 (CVE-2020-28493): unknown key(s) reviewer",
        ),
        (
            # A far-future date would make the exception permanent.
            {"reason": "reviewed once", "expires": dt.date(2099, 1, 1)},
            "entry 1 (CVE-2020-28493): expires 2099-01-01, over 90 days ahead: "
            "review it at least that often",
        ),
        (
            {"reason": "reviewed once", "expires": dt.date.today() + dt.timedelta(days=91)},
            "over 90 days ahead: review it at least that often",
        ),
    ],
)
def test_an_entry_that_may_not_stand_fails_the_audit(
    tmp_path: Path,
    osv: OsvStandIn,
    vulnerable_lock: Path,
    entry: dict[str, object],
    problem: str,
) -> None:
    ignore = ignore_file(tmp_path, **{"id": "CVE-2020-28493", "package": "jinja2", **entry})
    done, report = gate(*audit_args(vulnerable_lock, osv, ignore), report=tmp_path / "r.json")
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if "audit-ignore.toml" in line]
    assert len(problems) == 1
    assert problems[0].startswith("pip-audit: FAIL: audit-ignore.toml: ")
    assert problems[0].endswith(problem)
    assert report["audit"]["status"] == "FAIL"


def test_the_locks_pass_when_the_database_knows_nothing_against_them(
    tmp_path: Path, osv: OsvStandIn
) -> None:
    done, report = gate("audit", "--osv-url", osv.url, report=tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    # dev.lock holds main.lock: each distinct pin is audited once.
    pins = {(query["package"]["name"], query["version"]) for query in osv.queries}
    assert report["audit"]["packages"] == len(pins) > 100
    assert ("fastapi", next(v for n, v in pins if n == "fastapi")) in pins
    assert f"pip-audit: PASS: {len(pins)} packages audited" in done.stdout


def test_an_unreachable_database_is_not_audited_never_a_pass(
    tmp_path: Path, vulnerable_lock: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1/query"  # nothing listens there
    args = ["audit", "--lock", str(vulnerable_lock), "--osv-url", closed]
    line = "pip-audit: NOT AUDITED: vulnerability database unreachable: 2 of 2 packages not audited"

    strict, report = gate(*args, report=tmp_path / "strict.json")
    assert strict.returncode == 3
    assert line in strict.stderr.splitlines()
    assert "PASS" not in strict.stdout + strict.stderr
    assert report["audit"]["status"] == "NOT AUDITED"
    assert [item["package"] for item in report["audit"]["not_audited"]] == ["jinja2", "markupsafe"]

    allowed, report = gate(*args, "--allow-unaudited", report=tmp_path / "allowed.json")
    assert allowed.returncode == 0
    assert line in allowed.stderr.splitlines()
    assert "PASS" not in allowed.stdout + allowed.stderr
    assert report["audit"]["status"] == "NOT AUDITED"
    assert report["audit"]["allow_unaudited"] is True

    release, _ = gate(
        *args, "--allow-unaudited", report=tmp_path / "release.json", env={REQUIRE_VULN_DB: "1"}
    )
    assert release.returncode == 3
    assert line in release.stderr.splitlines()


def test_a_skipped_pin_is_not_audited_never_a_pass(tmp_path: Path, osv: OsvStandIn) -> None:
    """pip-audit skips a URL requirement (it has no version to look up) with a reason of its
    own: the database answered, yet the pin was never checked."""
    lock = tmp_path / "url.lock"
    lock.write_text(
        "markupsafe==2.1.5\njinja2 @ https://files.example.invalid/Jinja2-2.11.2.tar.gz\n"
    )
    done, report = gate(*audit_args(lock, osv, tmp_path / "none.toml"), report=tmp_path / "r.json")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PASS" not in done.stdout + done.stderr
    assert report["audit"]["status"] == "NOT AUDITED"
    assert [item["package"] for item in report["audit"]["not_audited"]] == ["jinja2"]
    assert "URL requirements" in report["audit"]["not_audited"][0]["reason"]


def test_a_pin_behind_a_marker_false_here_is_not_audited(tmp_path: Path, osv: OsvStandIn) -> None:
    """pip-audit drops a pin whose environment marker is false on this machine without a
    word: the vulnerable Jinja2 locked for another platform must not pass as audited."""
    lock = tmp_path / "marker.lock"
    lock.write_text('jinja2==2.11.2 ; sys_platform == "win32"\nmarkupsafe==2.1.5\n')
    done, report = gate(*audit_args(lock, osv, tmp_path / "none.toml"), report=tmp_path / "r.json")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PASS" not in done.stdout + done.stderr
    assert report["audit"]["status"] == "NOT AUDITED"
    assert [(i["package"], i["version"]) for i in report["audit"]["not_audited"]] == [
        ("jinja2", "2.11.2")
    ]
    assert "1 of 2 packages not audited" in done.stderr


# --- bandit ------------------------------------------------------------------------------------


def test_bandit_passes_on_the_sources(tmp_path: Path) -> None:
    done, report = gate("sast", report=tmp_path / "r.json")
    assert done.returncode == 0, done.stderr
    assert report["sast"]["findings"] == []
    assert report["sast"]["bare_nosec"] == []
    assert report["sast"]["files"] > 150


PLANTED = """

def planted_lookup(session, name):
    return session.execute(f"SELECT id FROM quotes WHERE title = '{name}'")


def planted_silenced(expression):
    return eval(expression)  # nosec
"""


def test_a_planted_medium_finding_and_a_bare_nosec_fail_bandit(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "ramparts" / "quotes" / "services.py"
    lines = len(target.read_text().splitlines())
    with target.open("a") as file:
        file.write(PLANTED)
    done, report = gate("sast", "--path", str(copy), report=tmp_path / "r.json")
    assert done.returncode == 1
    failures = [line for line in done.stderr.splitlines() if "FAIL" in line]
    assert len(failures) == 3, done.stderr
    assert failures[0].startswith(f"nosec: FAIL: {target}:{lines + 8}: a '# nosec' must name")
    assert failures[1].startswith(f"bandit: FAIL: {target}:{lines + 4} B608 (medium severity)")
    # The bare nosec silences nothing: the finding under it fails the gate too.
    assert failures[2].startswith(f"bandit: FAIL: {target}:{lines + 8} B307 (medium severity)")
    assert [(item["test"], item["line"]) for item in report["sast"]["findings"]] == [
        ("B608", lines + 4),
        ("B307", lines + 8),
    ]


def test_a_bandit_settings_file_among_the_sources_switches_nothing_off(tmp_path: Path) -> None:
    """bandit adopts a `.bandit` file it finds under the paths it scans: a planted one
    skipping B307 (or excluding the file) must not silence the finding."""
    (tmp_path / "module.py").write_text("RESULT = eval(input())\n")
    (tmp_path / ".bandit").write_text("[bandit]\nskips = B307\nexclude = module.py\n")
    done, report = gate("sast", "--path", str(tmp_path), report=tmp_path / "r.json")
    assert done.returncode == 1, done.stdout
    assert [item["test"] for item in report["sast"]["findings"]] == ["B307"]


@pytest.mark.parametrize(
    ("comment", "passes"),
    [
        ("# nosec", False),
        ("# nosec B307", False),
        ("# nosec: B307", False),
        ("# nosec # trusted", False),
        ("# nosec B307 # the expression is one of our constants", True),
        ("# noqa: S307  # nosec B307, B102 # the expression is one of our constants", True),
    ],
)
def test_a_nosec_names_its_test_and_says_why(tmp_path: Path, comment: str, passes: bool) -> None:
    source = tmp_path / "module.py"
    source.write_text(f'RESULT = eval("1 + 1")  {comment}\n')
    done, report = gate("sast", "--path", str(tmp_path), report=tmp_path / "r.json")
    assert (done.returncode == 0) is passes
    assert report["sast"]["bare_nosec"] == ([] if passes else [f"{source}:1"])
    # Only a justified nosec silences: an unjustified one is reported, and so is the finding.
    assert [item["test"] for item in report["sast"]["findings"]] == ([] if passes else ["B307"])


@pytest.mark.parametrize(
    "comment",
    [
        # bandit reads both as a bare nosec, silencing every test on the line.
        "# nosec B999 # the command is one of our constants",
        "# nosec # nosec B101 # the command is one of our constants",
        # Another test than the one that fires.
        "# nosec B307 # the command is one of our constants",
    ],
)
def test_a_justified_nosec_silences_only_the_test_it_names(tmp_path: Path, comment: str) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        f'import subprocess\nRESULT = subprocess.call("ls " + input(), shell=True)  {comment}\n'
    )
    done, report = gate("sast", "--path", str(tmp_path), report=tmp_path / "r.json")
    assert done.returncode == 1, done.stdout
    assert report["sast"]["bare_nosec"] == []
    assert [(item["test"], item["line"]) for item in report["sast"]["findings"]] == [("B602", 2)]
