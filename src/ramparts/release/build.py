"""Builds a release: the project's wheel, and a CycloneDX SBOM of the environment it runs in.

The environment is a throwaway virtualenv holding exactly what `scripts/bootstrap main`
installs (`requirements/main.lock`, every distribution checked against its hashes) plus the
new wheel, and `pip check` must find every requirement met. `cyclonedx-py environment` lists
it, with the project as the root component; its SBOM carries no hashes, so each component gets
the SHA-256 of the very file pip installed (from pip's installation report), and the root gets
the wheel's. Nothing is fetched but from the package index pip is configured with, and pip's
cache makes a second build take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramparts.release.manifest import ReleaseError

__all__ = ["BUILD_STEPS", "build_release"]

BUILD_STEPS = 4
LOCK = Path("requirements") / "main.lock"
TIMEOUT_SECONDS = 600
# This machine's pip.conf names index directories that do not all exist: noise, not failure.
PIP_NOISE = re.compile(r"^WARNING: Location .* is ignored")


def _canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(what: str, command: list[str], *, cwd: Path | None = None) -> None:
    # The caller's PYTHONPATH (a checkout's src/, in tests) must not leak into the throwaway
    # environment, or the SBOM would describe that instead.
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        finished = subprocess.run(  # noqa: S603 - our interpreter, fixed arguments, no shell
            command,
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{what} took over {TIMEOUT_SECONDS} s") from None
    if finished.returncode != 0:
        lines = [
            line.strip()
            for line in (finished.stderr + finished.stdout).splitlines()
            if line.strip() and not PIP_NOISE.match(line)
        ]
        raise ReleaseError(
            f"{what} failed: {lines[-1] if lines else f'exit {finished.returncode}'}"
        )


def _installed_hashes(report: Path) -> dict[str, tuple[str, str]]:
    """{canonical name: (version, sha256)} of what a `pip install --report` installed."""
    found = {}
    for item in json.loads(report.read_text())["install"]:
        metadata, archive = item["metadata"], item["download_info"].get("archive_info", {})
        digest = archive.get("hashes", {}).get("sha256")
        if digest is None:
            raise ReleaseError(f"pip reports no SHA-256 for {metadata['name']}")
        found[_canonical(metadata["name"])] = (metadata["version"], digest)
    return found


def _add_hashes(sbom: dict[str, Any], installed: dict[str, tuple[str, str]]) -> None:
    """Give every component the SHA-256 of the file installed for it; every installed
    distribution must be in the SBOM (the root is the project itself)."""
    listed = {_canonical(c["name"]): c for c in sbom.get("components", [])}
    root = sbom["metadata"]["component"]
    listed.setdefault(_canonical(root["name"]), root)
    for name, (version, digest) in installed.items():
        component = listed.get(name)
        if component is None or component.get("version") != version:
            raise ReleaseError(f"the SBOM does not list {name}=={version}, which is installed")
        component["hashes"] = [{"alg": "SHA-256", "content": digest}]


def _cyclonedx(project: Path) -> str:
    """cyclonedx-py from the supply-chain tools' venv (`scripts/bootstrap tools`), kept apart
    from the environment it lists, else on PATH."""
    kept_apart = project / ".venv-tools" / "bin" / "cyclonedx-py"
    found = str(kept_apart) if kept_apart.is_file() else shutil.which("cyclonedx-py")
    if found is None:
        raise ReleaseError("cyclonedx-py is not installed (scripts/bootstrap tools installs it)")
    return found


def build_release(
    project: Path,
    out: Path,
    *,
    python: Path = Path(sys.executable),
    step: Callable[[str], None] = lambda _description: None,
) -> dict[str, Any]:
    """Build `project`'s wheel into the empty (or new) directory `out`, with its SBOM beside it
    (`<name>-<version>.cdx.json`); `step` hears each of the BUILD_STEPS steps as it starts."""
    lock = project / LOCK
    if not (project / "pyproject.toml").is_file() or not lock.is_file():
        raise ReleaseError(f"{project} has no pyproject.toml and {LOCK}: not the project root")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out} is not empty: a release directory holds one release")
    cyclonedx = _cyclonedx(project)
    out.mkdir(parents=True, exist_ok=True)
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]

    step("building the wheel")
    _run(
        "building the wheel",
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), "."],
        cwd=project,
    )
    wheels = list(out.glob("*.whl"))
    if len(wheels) != 1:
        raise ReleaseError(f"building the wheel left {len(wheels)} wheels in {out}")
    wheel = wheels[0]
    name, version = wheel.name.split("-")[:2]

    with tempfile.TemporaryDirectory(prefix="ramparts-release-") as scratch:
        root = Path(scratch)
        venv_python = root / "venv" / "bin" / "python"
        install = [*pip, "--python", str(venv_python), "install", "--no-deps", "--no-compile"]
        step("installing the locked dependencies")
        _run(
            "making the SBOM's environment",
            [str(python), "-m", "venv", "--without-pip", str(root / "venv")],
        )
        _run(
            f"installing {LOCK}",
            [*install, "--require-hashes", "--report", str(root / "lock.json"), "-r", str(lock)],
        )
        step("installing the wheel")
        _run(
            f"installing {wheel.name}",
            [*install, "--report", str(root / "wheel.json"), str(wheel)],
        )
        _run("pip check of the wheel's requirements", [*pip, "--python", str(venv_python), "check"])
        step("listing the environment (CycloneDX)")
        _run(
            "cyclonedx-py",
            [
                cyclonedx,
                "environment",
                "--pyproject",
                str(project / "pyproject.toml"),
                "--output-reproducible",
                # The library's schema validation takes ~20 s; what it produces is valid by
                # construction, and only `hashes` entries of the schema's own shape are added.
                "--no-validate",
                "-o",
                str(root / "sbom.json"),
                str(venv_python),
            ],
        )
        sbom = json.loads((root / "sbom.json").read_text())
        installed = _installed_hashes(root / "lock.json") | _installed_hashes(root / "wheel.json")

    _add_hashes(sbom, installed)
    wheel_digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if installed[_canonical(name)] != (version, wheel_digest):
        raise ReleaseError(f"the environment holds another {name} than {wheel.name}")
    sbom_path = out / f"{name}-{version}.cdx.json"
    sbom_path.write_text(json.dumps(sbom, indent=2, sort_keys=True) + "\n")
    return {
        "directory": str(out),
        "wheel": wheel.name,
        "sbom": sbom_path.name,
        "components": len(sbom.get("components", [])) + 1,
    }
