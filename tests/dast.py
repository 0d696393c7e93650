"""DAST: schemathesis (`st run`) against the OpenAPI of a running instance, as one role.

The same runs CI makes (`tests/test_dast.py`) an operator makes against a deployed instance:
`scripts/dast BASE_URL`, with each role's access token in `DAST_TOKEN_<ROLE>` (see `main`).
The checks of `tests/dast_checks.py` run beside schemathesis' own. Bounded for CI: a fixed
seed, a few examples per operation, no shrinking, and a deadline on each run.
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
#: The checks run (schemathesis' own and `tests/dast_checks.py`'s) are chosen in `dast.toml`.
MAX_EXAMPLES = 5
SEED = 17
#: Every phase by default; a quick run (a live conformance check) may skip "coverage", the
#: phase that costs most (about 1,300 cases per role).
PHASES = "examples,coverage,fuzzing"


@dataclass(frozen=True)
class Finding:
    operation: str  # "METHOD /path", as the OpenAPI names it
    message: str  # schemathesis' report: each failed check, the response, a curl to replay

    @property
    def summary(self) -> str:
        """The failed checks, such as `ST100 Server error; ST901 Custom check failed`."""
        checks = [
            line.strip().removeprefix("- ")
            for line in self.message.splitlines()
            if line.strip().startswith("- ST")
        ]
        return "; ".join(checks) or self.message.splitlines()[0]


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
    exclude: str | None = None,
    phases: str = PHASES,
) -> DastRun:
    """Run schemathesis against `base_url`/openapi.json with `token` (None: anonymous), on
    every operation or those whose path matches the regular expression `paths`, less those
    whose path matches `exclude`."""
    junit = report_dir / f"{role}.xml"
    command = [
        ST,
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(SEED),
        "--no-shrink",
        "--phases",
        phases,
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
    if exclude is not None:
        command += ["--exclude-path-regex", exclude]
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


#: `DAST_TOKEN_<ROLE>`: an access token of that role, for `main`.
TOKEN_PREFIX = "DAST_TOKEN_"
#: Optional, for `main`: `DAST_PHASES` (schemathesis phases, default `PHASES`) and
#: `DAST_EXCLUDE_PATHS` (a regular expression of paths not tested, such as `^/metrics$` when
#: the caller sits in the instance's metrics network and so may read it without a token).
PHASES_VARIABLE = "DAST_PHASES"
EXCLUDE_VARIABLE = "DAST_EXCLUDE_PATHS"


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.dast BASE_URL [MAX_EXAMPLES]`: one run without a token, then one per
    `DAST_TOKEN_<ROLE>` in the environment (see `PHASES_VARIABLE`, `EXCLUDE_VARIABLE`);
    prints each run and its findings; exit 1 when any run found something or failed, 2 on bad
    usage."""
    args = sys.argv[1:] if argv is None else argv
    usable = 1 <= len(args) <= 2 and args[0].startswith(("http://", "https://"))
    if not usable or (len(args) == 2 and not (args[1].isdigit() and int(args[1]) > 0)):
        print(
            "dast: error: usage: scripts/dast http(s)://BASE_URL [MAX_EXAMPLES > 0]",
            file=sys.stderr,
        )
        return 2
    base_url = args[0].rstrip("/")
    max_examples = int(args[1]) if len(args) == 2 else MAX_EXAMPLES
    tokens: dict[str, str | None] = {"anonymous": None}
    tokens |= {
        name.removeprefix(TOKEN_PREFIX).lower(): value
        for name, value in sorted(os.environ.items())
        if name.startswith(TOKEN_PREFIX) and value
    }
    report_dir = Path(os.environ.get("DAST_REPORT_DIR", "dast-report"))
    report_dir.mkdir(parents=True, exist_ok=True)
    clean = True
    for role, token in tokens.items():
        result = run_dast(
            base_url,
            role=role,
            token=token,
            report_dir=report_dir,
            deadline=600,
            max_examples=max_examples,
            exclude=os.environ.get(EXCLUDE_VARIABLE) or None,
            phases=os.environ.get(PHASES_VARIABLE) or PHASES,
        )
        ok = result.returncode == 0 and not result.findings
        clean &= ok
        verdict = "clean" if ok else f"{len(result.findings)} finding(s)"
        print(f"{role}: {result.operations} operations, {result.seconds:.0f} s, {verdict}")
        for finding in result.findings:
            print(f"  {finding.operation}: {finding.summary}")
        if result.returncode != 0 and not result.findings:
            print(result.output[-2000:])
    print(f"JUnit reports in {report_dir}/")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
