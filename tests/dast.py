"""DAST: schemathesis (`st run`) against the OpenAPI of a running instance, as one role.

The same command an operator runs against a deployed instance (docs: the operations guide),
with the checks of `tests/dast_checks.py` beside schemathesis' own. Bounded for CI: a fixed
seed, a few examples per operation, no shrinking, and a deadline on the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ST = str(Path(sys.executable).with_name("st"))
CONFIG = Path(__file__).with_name("dast.toml")
#: schemathesis' checks that hold for every role. Left out: `positive_data_acceptance` (a
#: role's schema-valid request is rightly refused: 403 for another role's action, 404 for a
#: random id, 409 for a quote in another state) and the stateful checks that assume any
#: caller may create what it reads (`use_after_free`, `ensure_resource_availability`).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "refusals_are_problems",
    "no_token_no_entry",
)
MAX_EXAMPLES = 8
SEED = 17


@dataclass(frozen=True)
class Finding:
    operation: str  # "METHOD /path", as the OpenAPI names it
    message: str


@dataclass(frozen=True)
class DastRun:
    role: str
    returncode: int
    seconds: float
    operations: int
    findings: tuple[Finding, ...]
    output: str

    @property
    def failed_operations(self) -> set[str]:
        return {finding.operation for finding in self.findings}


def run_dast(
    base_url: str,
    *,
    role: str,
    token: str | None,
    report_dir: Path,
    deadline: float = 120,
    max_examples: int = MAX_EXAMPLES,
    paths: str | None = None,
) -> DastRun:
    """Run schemathesis against `base_url`/openapi.json with `token` (None: anonymous), on
    every operation or those whose path matches the regular expression `paths`."""
    junit = report_dir / f"{role}.xml"
    command = [
        ST,
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--no-shrink",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "10",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
    ]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    if paths is not None:
        command += ["--include-path-regex", paths]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.dast_checks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "NO_COLOR": "1",
    }
    began = time.monotonic()
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=deadline, check=False
    )
    seconds = time.monotonic() - began
    operations, findings = _read_junit(junit) if junit.exists() else (0, ())
    return DastRun(
        role=role,
        returncode=done.returncode,
        seconds=seconds,
        operations=operations,
        findings=findings,
        output=done.stdout + done.stderr,
    )


def _read_junit(path: Path) -> tuple[int, tuple[Finding, ...]]:
    """The operations tested and each failure, from schemathesis' JUnit report."""
    # Trusted XML: our own `st` run wrote it.
    cases = list(ET.parse(path).getroot().iter("testcase"))  # noqa: S314
    findings = [
        Finding(
            str(case.get("name")), "\n".join(filter(None, [problem.get("message"), problem.text]))
        )
        for case in cases
        for problem in case
        if problem.tag in ("failure", "error")
    ]
    return len({case.get("name") for case in cases}), tuple(findings)
