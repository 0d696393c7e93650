"""A release cut as the operator cuts it: `keys rotate --release`, `keys public-key`,
`release build`, `release sign`, `release verify`, each a `ramparts` subprocess. The build is
real (pip builds the wheel, a throwaway environment installs the hash-checked lock and the
wheel, cyclonedx-py lists it), once for the module."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]
RAMPARTS = str(Path(sys.executable).with_name("ramparts"))
LOCK_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
# The build costs ~15 s of CPU and each `ramparts` start ~4 s: under 60 s on a quiet machine,
# but the module fixture's setup counts against the first test's timeout on a busy one.
pytestmark = pytest.mark.timeout(300)


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPARTS, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def locked(lock: Path) -> dict[str, tuple[str, set[str]]]:
    """{canonical name: (version, allowed SHA-256s)} of a `uv pip compile --generate-hashes`."""
    found: dict[str, tuple[str, set[str]]] = {}
    current = ""
    for line in lock.read_text().splitlines():
        entry = LOCK_ENTRY.match(line)
        if entry:
            current = re.sub(r"[-_.]+", "-", entry[1]).lower()
            found[current] = (entry[2], set())
        elif current and (digest := HASH.search(line)):
            found[current][1].add(digest[1])
    return found


@dataclass
class Cut:
    env: dict[str, str]
    dist: Path
    public_key: Path
    exported: dict[str, Any]
    built: dict[str, Any]
    signed: dict[str, Any]


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Cut:
    base = tmp_path_factory.mktemp("release")
    env = cli_env(base / "home")
    dist, public_key = base / "dist", base / "release.pub"

    made = run("keys", "rotate", "--release", "--json", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"kms_key": "release:v1"}
    exported = run("keys", "public-key", "--out", str(public_key), "--json", env=env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["pem"] == public_key.read_text()

    built = run("release", "build", "--out", str(dist), "--project", str(ROOT), "--json", env=env)
    assert built.returncode == 0, built.stderr
    signed = run("release", "sign", str(dist), "--json", env=env)
    assert signed.returncode == 0, signed.stderr
    return Cut(
        env,
        dist,
        public_key,
        json.loads(exported.stdout),
        json.loads(built.stdout),
        json.loads(signed.stdout),
    )


def verify(cut: Cut, directory: Path) -> subprocess.CompletedProcess[str]:
    # A user's machine: no RAMPARTS_HOME with a KMS, only the published public key.
    return run(
        "release",
        "verify",
        str(directory),
        "--public-key",
        str(cut.public_key),
        "--json",
        env=cli_env(directory.parent / "a-user"),
    )


def test_the_genuine_release_verifies(cut: Cut) -> None:
    verified = verify(cut, cut.dist)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["verified"] is True
    assert report["manifest"] == cut.signed
    wheel = cut.dist / cut.built["wheel"]
    listed = {a["name"]: a for a in cut.signed["artifacts"]}
    assert set(listed) == {cut.built["wheel"], cut.built["sbom"]}
    assert listed[wheel.name]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    fingerprint = run("keys", "public-key", "--json", env=cut.env)
    assert (
        cut.signed["signing_key"]["public_key_sha256"]
        == json.loads(fingerprint.stdout)["public_key_sha256"]
    )


def test_the_sbom_lists_ramparts_and_every_locked_dependency_with_its_hash(cut: Cut) -> None:
    sbom = json.loads((cut.dist / cut.built["sbom"]).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["specVersion"] == "1.6"
    root = sbom["metadata"]["component"]
    wheel = (cut.dist / cut.built["wheel"]).read_bytes()
    assert (root["name"], root["version"]) == ("ramparts", "0.1.0")
    assert root["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(wheel).hexdigest()}]
    components = {re.sub(r"[-_.]+", "-", c["name"]).lower(): c for c in sbom["components"]}
    lock = locked(ROOT / "requirements" / "main.lock")
    assert set(components) == set(lock)
    for name, (version, allowed) in lock.items():
        component = components[name]
        assert component["version"] == version, name
        assert component["purl"] == f"pkg:pypi/{name}@{version}", name
        # The SHA-256 of the file pip installed: one the lock allows.
        [digest] = component["hashes"]
        assert digest["alg"] == "SHA-256"
        assert digest["content"] in allowed, name
    assert cut.built["components"] == len(lock) + 1


def test_one_changed_byte_in_the_wheel_fails_verification_with_one_line(
    cut: Cut, tmp_path: Path
) -> None:
    """(Every other tampering, at the manifest's own level: tests/release/test_manifest.py.)"""
    tampered = tmp_path / "dist"
    shutil.copytree(cut.dist, tampered)
    wheel = tampered / cut.built["wheel"]
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x20
    wheel.write_bytes(bytes(data))

    refused = verify(cut, tampered)

    assert refused.returncode == 1
    assert refused.stderr == (
        f"ramparts: error: artifact {wheel.name} does not match its SHA-256 in the manifest\n"
    )
    assert json.loads(refused.stdout)["verified"] is False


def test_signing_without_the_release_key_is_one_line_and_writes_nothing(
    cut: Cut, tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned"
    shutil.copytree(cut.dist, unsigned)
    (unsigned / "manifest.json").unlink()
    (unsigned / "manifest.json.sig").unlink()
    before = sorted(p.name for p in unsigned.iterdir())

    refused = run("release", "sign", str(unsigned), env=cli_env(tmp_path / "keyless"))

    assert refused.returncode == 1
    assert refused.stderr == (
        "ramparts: error: no signing key 'release' in the KMS: "
        "make it with `ramparts keys rotate --release`\n"
    )
    assert sorted(p.name for p in unsigned.iterdir()) == before
