"""Live check of PLT-2, the build, from this installation's source tree (the project root the
`ramparts` package is imported from, when it is a checkout).

Proven here, now: a release built from the tree (wheel and CycloneDX SBOM, `ramparts release
build`) is signed by a throwaway KMS release key and verifies with its public key alone,
and one altered byte of the wheel fails the verification; every lock pins every
distribution to hashes. Not provable here: SAST, the dependency audit and DAST run in CI.
For those the check reads CI's evidence in the tree (`scripts/supply-chain`'s report
`.ci/out/supply-chain.json`, `scripts/dast`'s JUnit reports in `dast-report/`): it counts
only a report that is present, says PASS (or has no failure), and is newer than the sources
and locks it judges. The rule: FAIL on any failure seen; PASS only when every part is proven
(here or by such evidence); otherwise NOT-IMPLEMENTED, naming what is unproven.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
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
from ramparts.tabletop.conformance.playing import unproven
from ramparts.tabletop.target import Target

__all__ = ["project_root", "the_build_is_signed_and_pinned"]

PLT2 = (
    "a signed wheel that verifies (and fails on one altered byte), its CycloneDX SBOM, "
    "dependencies pinned by hash; SAST, dependency audit and DAST passing in CI"
)
SUPPLY_CHAIN_REPORT = Path(".ci") / "out" / "supply-chain.json"
DAST_REPORTS = Path("dast-report")
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


def _supply_chain_report(root: Path, parts: _Parts) -> None:
    path = root / SUPPLY_CHAIN_REPORT
    if not path.is_file():
        parts.unproven.append(f"SAST and the dependency audit (no CI report {SUPPLY_CHAIN_REPORT})")
        return
    report: dict[str, Any] = json.loads(path.read_text())
    finished = report.get("finished_at")
    stale = finished is None or datetime.fromisoformat(finished).timestamp() < _newest_source(root)
    for gate, named in (("sast", "SAST (bandit)"), ("audit", "the dependency audit (pip-audit)")):
        status = (report.get(gate) or {}).get("status")
        parts.saw(
            f"{SUPPLY_CHAIN_REPORT} of {finished}: {named} {status}"
            + (" (older than the sources)" if stale else "")
        )
        if status == "FAIL":
            parts.failed.append(f"{named} failed in CI")
        elif status != "PASS" or stale:
            parts.unproven.append(f"{named} ({status or 'not run'}{', stale' if stale else ''})")
        else:
            parts.proven.append(f"{named} passed in CI")


def _dast_reports(root: Path, parts: _Parts) -> None:
    reports = sorted((root / DAST_REPORTS).glob("*.xml"))
    if not reports:
        parts.unproven.append(f"DAST (no CI report in {DAST_REPORTS}/)")
        return
    tests = failures = 0
    newest = _newest_source(root)
    stale = any(report.stat().st_mtime < newest for report in reports)
    for report in reports:
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):  # noqa: S314 - CI's own file
            tests += int(suite.get("tests", 0))
            failures += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    parts.saw(
        f"{DAST_REPORTS}/: {len(reports)} JUnit report(s), {tests} tests, {failures} failed"
        + (" (older than the sources)" if stale else "")
    )
    if failures:
        parts.failed.append(f"DAST found {failures} failure(s)")
    elif tests == 0 or stale:
        parts.unproven.append("DAST (stale or empty reports)")
    else:
        parts.proven.append("DAST passed in CI")


@check("PLT-2")
def the_build_is_signed_and_pinned(target: Target) -> Outcome:
    root = project_root()
    if root is None:
        return unproven(
            PLT2,
            "this installation is a wheel, not a source tree: nothing to build, no lock "
            "files and no CI evidence to read here",
        )
    parts = _Parts()
    _release(root, parts)
    _locks(root, parts)
    _supply_chain_report(root, parts)
    _dast_reports(root, parts)
    if parts.failed:
        return fail(PLT2, "; ".join(parts.failed), parts.evidence)
    proven = f"proven: {'; '.join(parts.proven) or 'nothing'}"
    if parts.unproven:
        return unproven(PLT2, f"{proven}. Not proven: {'; '.join(parts.unproven)}", parts.evidence)
    return passed(PLT2, proven, parts.evidence)
