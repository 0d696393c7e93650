"""Live check of PLT-2, the build, from this installation's source tree (the project root the
`ramparts` package is imported from, when it is a checkout).

Proven here, now:
- a release built from the tree (wheel and CycloneDX SBOM, `ramparts release build`) is
  signed by a throwaway KMS release key and verifies with its public key alone, and one
  altered byte of the wheel fails the verification; every lock pins every distribution to
  hashes;
- SAST (bandit) and the dependency audit (pip-audit): the project's gate `scripts/supply-chain`
  runs (its tools in `.venv-tools`, `scripts/bootstrap tools`), unless CI's report of it
  (`.ci/out/supply-chain.json`) is newer than every source and lock it judges. A vulnerability
  database out of reach ("NOT AUDITED") follows the project's policy, as `scripts/check` does:
  a caveat stated in the evidence, not a finding, unless SUPPLY_CHAIN_REQUIRE_VULN_DB=1 (a
  release build), which fails the row;
- DAST: the project's schemathesis run (`tests/dast.py`, as `scripts/dast`) against this very
  instance, without a token and with one signed-in person of each set of roles of one tenant
  (the first listed, whom no other check locks), a few examples per operation and without the
  costly coverage phase, which CI's run (`tests/test_dast.py`) keeps.
The rule: FAIL on any failure seen; PASS only when every part is proven; otherwise
NOT-IMPLEMENTED, naming what is unproven (a wheel install has no tree; a main-only install
has no schemathesis, a tree without `scripts/bootstrap tools` no bandit or pip-audit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ramparts
from ramparts.crypto.keystore import LocalKms
from ramparts.crypto.kms import RELEASE_KEY
from ramparts.release.build import build_release
from ramparts.release.manifest import ReleaseError, sign_release, verify_release
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.people import admin_of, first_of_each_role_set
from ramparts.tabletop.conformance.playing import unproven
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["project_root", "the_build_is_signed_and_pinned"]

PLT2 = (
    "a signed wheel that verifies (and fails on one altered byte), its CycloneDX SBOM, "
    "dependencies pinned by hash; SAST, dependency audit and DAST passing"
)
SUPPLY_CHAIN = Path("scripts") / "supply-chain"
SUPPLY_CHAIN_REPORT = Path(".ci") / "out" / "supply-chain.json"
SUPPLY_CHAIN_TOOLS = ("bandit", "pip-audit")
REQUIRE_VULN_DB = "SUPPLY_CHAIN_REQUIRE_VULN_DB"
NOT_AUDITED = "NOT AUDITED"
DAST = Path("tests") / "dast.py"
DAST_COMMAND = ("-m", "tests.dast")
#: Examples per operation and phases of the live run: well under a minute for every role.
DAST_EXAMPLES = 3
DAST_PHASES = "examples,fuzzing"
DAST_DEADLINE = 300
_PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def project_root() -> Path | None:
    """The checkout `ramparts` is imported from (src layout), or None for an installed wheel."""
    root = Path(ramparts.__file__).resolve().parents[2]
    return (
        root if (root / "pyproject.toml").is_file() and (root / "requirements").is_dir() else None
    )


class _Parts:
    """Each part of the control: proven, failed, or not proven here, with its evidence."""

    def __init__(self) -> None:
        self.evidence: list[str] = []
        self.proven: list[str] = []
        self.failed: list[str] = []
        self.unproven: list[str] = []

    def saw(self, line: str) -> None:
        self.evidence.append(line)


def _release(root: Path, parts: _Parts) -> None:
    with tempfile.TemporaryDirectory(prefix="ramparts-release-") as scratch:
        home = Path(scratch)
        dist = home / "dist"
        began = time.monotonic()
        try:
            built = build_release(root, dist)
        except ReleaseError as exc:
            parts.unproven.append(f"the release build ({exc})")
            parts.saw(f"ramparts release build → refused: {exc}")
            return
        took = time.monotonic() - began
        kms = LocalKms(home / "keystore.json", key_file=home / "kek.key", create_key_file=True)
        kms.rotate_signing_key(RELEASE_KEY)
        public = kms.public_key(RELEASE_KEY)
        assert public is not None  # noqa: S101 - made just above
        manifest = sign_release(dist, kms)
        verify_release(dist, public.pem())
        parts.saw(
            f"built {built['wheel']} and {built['sbom']} ({built['components']} components) "
            f"in {took:.0f} s, signed by a throwaway release key ({public.fingerprint[:16]}…), "
            f"verified with its public key: {len(manifest['artifacts'])} artifact(s) intact"
        )
        _sbom(dist / built["sbom"], parts)
        wheel = dist / built["wheel"]
        data = bytearray(wheel.read_bytes())
        data[len(data) // 2] ^= 0x01
        wheel.write_bytes(bytes(data))
        try:
            verify_release(dist, public.pem())
        except ReleaseError as exc:
            parts.saw(f"one byte of the wheel altered → verify refused: {exc}")
            parts.proven.append("a signed release verifies and one altered byte fails it")
        else:
            parts.failed.append("a release with one altered byte verified")


def _sbom(path: Path, parts: _Parts) -> None:
    sbom = json.loads(path.read_text())
    components = sbom.get("components", [])
    hashed = sum(bool(c.get("hashes")) for c in components)
    root = sbom.get("metadata", {}).get("component", {})
    parts.saw(
        f"SBOM {sbom.get('bomFormat')} {sbom.get('specVersion')}: root {root.get('name')} "
        f"{root.get('version')}, {len(components)} components, {hashed} with a SHA-256"
    )
    if sbom.get("bomFormat") != "CycloneDX" or not components or hashed != len(components):
        parts.failed.append("the SBOM is not a CycloneDX list of every component with its hash")
    else:
        parts.proven.append("its CycloneDX SBOM, every component hashed")


def _locks(root: Path, parts: _Parts) -> None:
    locks = sorted((root / "requirements").glob("*.lock"))
    unpinned: list[str] = []
    count = 0
    for lock in locks:
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
        for entry in entries:
            pinned = _PINNED.match(entry)
            if pinned:
                count += 1
                if not _HASH.search(entry):
                    unpinned.append(f"{lock.name}:{pinned.group(1)}")
    parts.saw(f"{len(locks)} lock files, {count} distributions, {len(unpinned)} without a hash")
    if not locks or count == 0:
        parts.unproven.append("pinned dependencies (no lock files)")
    elif unpinned:
        parts.failed.append(f"unhashed pins: {', '.join(unpinned[:5])}")
    else:
        parts.proven.append("every locked distribution pinned by hash")


def _newest_source(root: Path) -> float:
    sources = [*(root / "src").rglob("*.py"), *(root / "requirements").glob("*.lock")]
    return max(path.stat().st_mtime for path in sources)


def _fresh_ci_report(root: Path) -> dict[str, Any] | None:
    """CI's supply-chain report, when it is newer than every source and lock it judges."""
    path = root / SUPPLY_CHAIN_REPORT
    if not path.is_file():
        return None
    report: dict[str, Any] = json.loads(path.read_text())
    finished = report.get("finished_at")
    if finished is None or datetime.fromisoformat(finished).timestamp() < _newest_source(root):
        return None
    return report


def _gate_tools_missing(root: Path) -> list[str]:
    """The gate's tools found neither in the tree's `.venv-tools` nor on PATH (its own rule)."""
    return [
        name
        for name in SUPPLY_CHAIN_TOOLS
        if not (root / ".venv-tools" / "bin" / name).exists() and shutil.which(name) is None
    ]


class SupplyChainGate:
    """`scripts/supply-chain` started in the background (it waits on the network and on
    bandit while the release builds), or CI's fresh report of it, or why neither is here."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.report_path = scratch / "supply-chain.json"
        self.source = f"CI's {SUPPLY_CHAIN_REPORT}"
        self.ci_report = _fresh_ci_report(root)
        self.missing = ""
        self.process: subprocess.Popen[str] | None = None
        self.began = time.monotonic()
        if self.ci_report is not None:
            return
        missing = _gate_tools_missing(root)
        if not (root / SUPPLY_CHAIN).is_file() or missing:
            self.missing = (
                f"{', '.join(missing) or SUPPLY_CHAIN} not installed: scripts/bootstrap tools"
            )
            return
        # The project's own policy, as scripts/check runs it: NOT AUDITED is reported, not
        # failed, unless SUPPLY_CHAIN_REQUIRE_VULN_DB=1 in the environment overrides it.
        command = [sys.executable, str(root / SUPPLY_CHAIN), "--allow-unaudited"]
        self.source = f"{SUPPLY_CHAIN} run now"
        self.process = subprocess.Popen(  # noqa: S603 - the tree's own gate, fixed arguments
            [*command, "--report", str(self.report_path)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def judge(self, parts: _Parts) -> None:
        if self.missing:
            parts.unproven.append(f"SAST and the dependency audit ({self.missing})")
            return
        report = self.ci_report
        if self.process is not None:
            try:
                output, _ = self.process.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
                parts.unproven.append(f"SAST and the dependency audit ({SUPPLY_CHAIN} timed out)")
                return
            took = time.monotonic() - self.began
            parts.saw(
                f"{SUPPLY_CHAIN} --allow-unaudited → exit {self.process.returncode} in {took:.0f} s"
            )
            if not self.report_path.is_file():
                last = (output.strip().splitlines() or ["no output"])[-1]
                parts.unproven.append(f"SAST and the dependency audit ({SUPPLY_CHAIN}: {last})")
                return
            report = json.loads(self.report_path.read_text())
        assert report is not None  # noqa: S101 - a CI report, else the run's
        judge_supply_chain(report, self.source, parts)


def judge_supply_chain(report: dict[str, Any], source: str, parts: _Parts) -> None:
    """The verdicts of one supply-chain report, under the project's policy for NOT AUDITED."""
    sast = report.get("sast") or {}
    status = sast.get("status")
    findings = sast.get("findings") or []
    bare = sast.get("bare_nosec") or []
    parts.saw(
        f"{source}: bandit {status}: {sast.get('files', 0)} files, {len(findings)} finding(s), "
        f"{len(bare)} bare nosec"
    )
    for finding in findings[:3]:
        parts.saw(
            f"bandit: {finding.get('filename')}:{finding.get('line_number')} "
            f"{finding.get('test_id')} ({finding.get('issue_severity')}): "
            f"{finding.get('issue_text')}"
        )
    if status == "FAIL":
        parts.failed.append("SAST (bandit) failed")
    elif status == "PASS":
        parts.proven.append("SAST (bandit) passed")
    else:
        parts.unproven.append(f"SAST (bandit) ({status or 'not run'})")
    _judge_audit(report.get("audit") or {}, source, parts)


def _judge_audit(audit: dict[str, Any], source: str, parts: _Parts) -> None:
    status = audit.get("status")
    findings = audit.get("findings") or []
    live = [f for f in findings if f.get("ignored_because") is None]
    parts.saw(
        f"{source}: pip-audit {status}: {audit.get('packages', 0)} packages, "
        f"{len(live)} known vulnerability(ies), {len(findings) - len(live)} ignored after review"
    )
    for finding in live[:3]:
        parts.saw(
            f"pip-audit: {finding.get('package')} {finding.get('version')} {finding.get('id')}"
        )
    for problem in (audit.get("problems") or [])[:3]:
        parts.saw(f"pip-audit: {problem}")
    if status == "FAIL":
        parts.failed.append("the dependency audit (pip-audit) failed")
    elif status == "PASS":
        parts.proven.append("the dependency audit (pip-audit) passed")
    elif status == NOT_AUDITED:
        unaudited = len(audit.get("not_audited") or [])
        caveat = (
            f"pip-audit: {NOT_AUDITED}: vulnerability database unreachable, {unaudited} of "
            f"{audit.get('packages', 0)} packages not audited"
        )
        if os.environ.get(REQUIRE_VULN_DB) == "1":
            parts.saw(f"{caveat}; {REQUIRE_VULN_DB}=1 requires the database")
            parts.failed.append(f"the dependency audit (pip-audit) {NOT_AUDITED}, required")
        else:
            parts.saw(f"{caveat} — not a finding; set {REQUIRE_VULN_DB}=1 to fail on it")
            parts.proven.append(
                f"the dependency audit (pip-audit) found no known vulnerability "
                f"({NOT_AUDITED}: no vulnerability database reachable, a stated caveat)"
            )
    else:
        parts.unproven.append(f"the dependency audit (pip-audit) ({status or 'not run'})")


def _dast_tokens(target: Target) -> dict[str, str]:
    """`DAST_TOKEN_<ROLES>` of the first person of each set of roles of the last tenant."""
    tenant = target.tenants()[-1]
    return {
        "DAST_TOKEN_" + "_".join(sorted(roles)).upper(): target.session(person).access_token
        for person, roles in first_of_each_role_set(target, tenant)
    }


def _metrics_open_here(target: Target) -> bool:
    """Whether this host may scrape /metrics without a token (it sits in the instance's
    metrics network, by configuration): then the DAST would rightly see an open route."""
    return target.client().get("/metrics").status_code == 200


def run_dast(
    root: Path,
    base_url: str,
    tokens: dict[str, str],
    parts: _Parts,
    *,
    exclude: str | None = None,
    command: Sequence[str] = DAST_COMMAND,
) -> None:
    """The project's DAST (`python -m tests.dast`, as `scripts/dast`) against `base_url`."""
    with tempfile.TemporaryDirectory(prefix="ramparts-dast-") as scratch:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DAST_")},
            **tokens,
            "DAST_REPORT_DIR": scratch,
            "DAST_PHASES": DAST_PHASES,
            **({"DAST_EXCLUDE_PATHS": exclude} if exclude else {}),
        }
        began = time.monotonic()
        try:
            done = subprocess.run(  # noqa: S603 - the tree's own DAST, fixed arguments
                [sys.executable, *command, base_url, str(DAST_EXAMPLES)],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=DAST_DEADLINE,
                check=False,
            )
        except subprocess.TimeoutExpired:
            parts.failed.append(f"DAST did not finish within {DAST_DEADLINE} s")
            return
        took = time.monotonic() - began
        tests, failures = _junit(Path(scratch))
    roles = ", ".join(["anonymous", *(t.removeprefix("DAST_TOKEN_").lower() for t in tokens)])
    parts.saw(
        f"DAST ({DAST_PHASES}, {DAST_EXAMPLES} examples per operation) on {base_url} as "
        f"{roles} → exit {done.returncode} in {took:.0f} s: {tests} operation runs, "
        f"{len(failures)} failed" + (f"; not tested: {exclude}" if exclude else "")
    )
    for line in failures[:5]:
        parts.saw(f"DAST: {line}")
    if done.returncode == 2 or (done.returncode != 0 and tests == 0):
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        parts.unproven.append(f"DAST (could not run: {last})")
    elif failures or done.returncode != 0:
        parts.failed.append(f"DAST found {len(failures) or 'a'} failure(s)")
        if not failures:
            parts.saw(f"DAST output: {done.stdout.strip()[-500:]}")
    elif tests == 0:
        parts.unproven.append("DAST (no operation tested)")
    else:
        parts.proven.append("DAST of this instance, anonymous and per role, found nothing")


def _junit(directory: Path) -> tuple[int, list[str]]:
    """Test cases, and one line per failed one ("role: operation: message"), of the JUnit
    reports schemathesis wrote in `directory`."""
    tests = 0
    failures: list[str] = []
    for report in sorted(directory.glob("*.xml")):
        # Our own `st` run wrote it, just now, in our own temporary directory.
        root = ElementTree.parse(report).getroot()  # noqa: S314 # nosec B314 # our own report
        for case in root.iter("testcase"):
            tests += 1
            for problem in case:
                if problem.tag in ("failure", "error"):
                    message = (problem.get("message") or problem.text or "").strip()
                    first = message.splitlines()[0] if message else problem.tag
                    failures.append(f"{report.stem}: {case.get('name')}: {first}")
    return tests, failures


def _dast(target: Target, root: Path, parts: _Parts) -> None:
    if not (root / DAST).is_file():
        parts.unproven.append(f"DAST (no {DAST} in this tree)")
        return
    if not Path(sys.executable).with_name("st").exists():
        parts.unproven.append("DAST (schemathesis not installed: scripts/bootstrap dev)")
        return
    exclude = "^/metrics$" if _metrics_open_here(target) else None
    admin = target.session(admin_of(target, target.tenants()[-1]))
    before = _settings(admin)
    try:
        run_dast(root, target.base_url, _dast_tokens(target), parts, exclude=exclude)
    finally:
        _put_back(admin, before, parts)


def _settings(admin: ApiSession) -> dict[str, Any]:
    """What the tenant's admin may switch, which the DAST's admin run fuzzes: the assistant's
    kill-switch (whole or per tool) and the DLP rules."""
    killswitch = admin.get("/api/assistant/killswitch").json()
    return {
        "engaged": killswitch.get("engaged"),
        "tools": sorted(t["tool"] for t in killswitch.get("tools", []) if t.get("engaged")),
        "dlp": admin.get("/api/assistant/dlp").json(),
    }


def _put_back(admin: ApiSession, before: dict[str, Any], parts: _Parts) -> None:
    """The admin's fuzzing may switch the assistant or a tool off, or change the DLP rules:
    put them back as found, so that the later checks meet the instance they expect."""
    after = _settings(admin)
    changed = [key for key in before if after[key] != before[key]]
    for tool in sorted(set(after["tools"]) - set(before["tools"])):
        body = {"engaged": False, "tool": tool, "reason": "conformance: after the DAST"}
        admin.post("/api/assistant/killswitch", json=body)
    if after["engaged"] and not before["engaged"]:
        body = {"engaged": False, "reason": "conformance: after the DAST"}
        admin.post("/api/assistant/killswitch", json=body)
    if after["dlp"] != before["dlp"]:
        admin.put("/api/assistant/dlp", json=before["dlp"])
    if _settings(admin) != before:
        raise DrillError(f"the DAST changed {', '.join(changed)} and it could not be put back")
    parts.saw(
        f"after the DAST, {admin.username}'s settings: "
        + (f"{', '.join(changed)} changed by the fuzzing → put back" if changed else "unchanged")
    )


@check("PLT-2")
def the_build_is_signed_and_pinned(target: Target) -> Outcome:
    root = project_root()
    if root is None:
        return unproven(
            PLT2,
            "this installation is a wheel, not a source tree: nothing to build, no lock "
            "files, no supply-chain gate or DAST to run here",
        )
    parts = _Parts()
    with tempfile.TemporaryDirectory(prefix="ramparts-supply-chain-") as scratch:
        gate = SupplyChainGate(root, Path(scratch))
        try:
            _release(root, parts)
            _locks(root, parts)
            _dast(target, root, parts)
        finally:
            gate.judge(parts)
    if parts.failed:
        return fail(PLT2, "; ".join(parts.failed), parts.evidence)
    proven = f"proven: {'; '.join(parts.proven) or 'nothing'}"
    if parts.unproven:
        return unproven(PLT2, f"{proven}. Not proven: {'; '.join(parts.unproven)}", parts.evidence)
    return passed(PLT2, proven, parts.evidence)
