"""The signed release manifest: a genuine release verifies; one changed byte anywhere, a
missing or extra file, or another key's signature does not, and the failure names what."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ramparts.crypto.keystore import LocalKms
from ramparts.crypto.kms import RELEASE_KEY
from ramparts.release.manifest import (
    MANIFEST,
    SIGNATURE,
    ReleaseError,
    canonical_json,
    sign_release,
    verify_release,
)
from tests.live import temporary_kms

WHEEL = "ramparts-0.1.0-py3-none-any.whl"
SBOM = "ramparts-0.1.0.cdx.json"


@pytest.fixture
def signer(tmp_path: Path) -> LocalKms:
    kms = temporary_kms(tmp_path / "kms")
    kms.rotate_signing_key(RELEASE_KEY)
    return kms


@pytest.fixture
def public_pem(signer: LocalKms) -> bytes:
    public = signer.public_key(RELEASE_KEY)
    assert public is not None
    return public.pem()


@pytest.fixture
def release(tmp_path: Path, signer: LocalKms) -> Path:
    """A signed release of a random wheel and an SBOM."""
    directory = tmp_path / "dist"
    directory.mkdir()
    (directory / WHEEL).write_bytes(secrets.token_bytes(50_000))
    (directory / SBOM).write_text(json.dumps({"bomFormat": "CycloneDX", "components": []}))
    sign_release(directory, signer)
    return directory


def flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_genuine_release_verifies(release: Path, public_pem: bytes, signer: LocalKms) -> None:
    manifest = verify_release(release, public_pem)
    public = signer.public_key(RELEASE_KEY)
    assert public is not None
    assert manifest["name"] == "ramparts"
    assert manifest["version"] == "0.1.0"
    assert manifest["signing_key"] == {
        "ref": "release:v1",
        "algorithm": "Ed25519",
        "public_key_sha256": public.fingerprint,
    }
    wheel = (release / WHEEL).read_bytes()
    listed = {a["name"]: a for a in manifest["artifacts"]}
    assert set(listed) == {WHEEL, SBOM}
    assert listed[WHEEL]["size"] == len(wheel)
    # The manifest file is its own canonical form: the signed bytes are the file's bytes.
    assert (release / MANIFEST).read_bytes() == canonical_json(manifest)
    assert len((release / SIGNATURE).read_bytes()) == 64


@pytest.mark.parametrize(("artifact", "offset"), [(WHEEL, 0), (WHEEL, 31_337), (SBOM, 5)])
def test_one_changed_byte_in_an_artifact_fails(
    release: Path, public_pem: bytes, artifact: str, offset: int
) -> None:
    flip_one_byte(release / artifact, offset)
    with pytest.raises(ReleaseError, match=f"artifact {artifact} does not match its SHA-256"):
        verify_release(release, public_pem)


def test_an_edited_manifest_fails(release: Path, public_pem: bytes) -> None:
    manifest = json.loads((release / MANIFEST).read_bytes())
    manifest["artifacts"][0]["sha256"] = "0" * 64
    (release / MANIFEST).write_bytes(canonical_json(manifest))
    with pytest.raises(ReleaseError, match=r"does not verify with key .*: the manifest or its"):
        verify_release(release, public_pem)


def test_a_changed_signature_fails(release: Path, public_pem: bytes) -> None:
    flip_one_byte(release / SIGNATURE, 10)
    with pytest.raises(ReleaseError, match="does not verify"):
        verify_release(release, public_pem)


def test_a_signature_by_another_key_fails(release: Path, public_pem: bytes, tmp_path: Path) -> None:
    """An attacker re-signs a changed wheel with a key of their own: the manifest is genuine
    in form, but not signed by the published key."""
    flip_one_byte(release / WHEEL, 0)
    (release / MANIFEST).unlink()
    (release / SIGNATURE).unlink()
    attacker = temporary_kms(tmp_path / "attacker")
    attacker.rotate_signing_key(RELEASE_KEY)
    sign_release(release, attacker)
    with pytest.raises(ReleaseError, match="signed by another key"):
        verify_release(release, public_pem)
    # With the attacker's key it verifies: the signature, not the layout, made the difference.
    attacker_public = attacker.public_key(RELEASE_KEY)
    assert attacker_public is not None
    assert verify_release(release, attacker_public.pem())["version"] == "0.1.0"


def test_an_unverified_manifest_puts_no_text_of_its_own_in_the_error(
    release: Path, public_pem: bytes
) -> None:
    """The failure message quotes the forged manifest's claimed key only as a hex digest: a
    terminal escape there could redraw the line as a success."""
    manifest = genuine_manifest(release)
    manifest["signing_key"]["public_key_sha256"] = "\x1b[2K\rverified: ramparts 0.1.0 intact"
    (release / MANIFEST).write_bytes(canonical_json(manifest))
    with pytest.raises(ReleaseError) as refused:
        verify_release(release, public_pem)
    assert "\x1b" not in str(refused.value)
    assert "the manifest or its signature was changed" in str(refused.value)


def test_a_missing_or_extra_artifact_fails(release: Path, public_pem: bytes) -> None:
    (release / "ramparts-0.1.0.tar.gz").write_bytes(b"smuggled")
    with pytest.raises(ReleaseError, match=r"ramparts-0\.1\.0\.tar\.gz .* is not in the manifest"):
        verify_release(release, public_pem)
    (release / "ramparts-0.1.0.tar.gz").unlink()
    (release / SBOM).unlink()
    with pytest.raises(ReleaseError, match=f"artifact {SBOM} is missing"):
        verify_release(release, public_pem)


def test_an_unsigned_release_or_a_bad_public_key_fails(release: Path, public_pem: bytes) -> None:
    with pytest.raises(ReleaseError, match="not a PEM public key"):
        verify_release(release, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    (release / SIGNATURE).unlink()
    with pytest.raises(ReleaseError, match=f"{SIGNATURE} is missing: not a signed release"):
        verify_release(release, public_pem)


def test_signing_needs_the_release_key_one_wheel_and_an_unsigned_directory(
    tmp_path: Path, release: Path, signer: LocalKms
) -> None:
    with pytest.raises(ReleaseError, match="already signed"):
        sign_release(release, signer)
    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    (unsigned / SBOM).write_text("{}")
    with pytest.raises(ReleaseError, match="exactly one wheel, found 0"):
        sign_release(unsigned, signer)
    (unsigned / WHEEL).write_bytes(b"wheel")
    (unsigned / "link").symlink_to("/etc/passwd")
    with pytest.raises(ReleaseError, match=r"'link' .* is not a plain release file"):
        sign_release(unsigned, signer)
    (unsigned / "link").unlink()
    keyless = temporary_kms(tmp_path / "keyless")
    with pytest.raises(ReleaseError, match="keys rotate --release"):
        sign_release(unsigned, keyless)
    assert sorted(p.name for p in unsigned.iterdir()) == [WHEEL, SBOM]  # nothing written


def pem_of(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def test_a_public_key_file_must_hold_one_ed25519_key_alone(
    release: Path, public_pem: bytes, tmp_path: Path
) -> None:
    """A file of several keys would be checked against its first alone: an attacker's key put
    first in a key ring verifies the attacker's release, and a genuine key first hides that
    the file holds anything else."""
    attacker_pem = pem_of(Ed25519PrivateKey.generate())
    for several in (public_pem + attacker_pem, attacker_pem + public_pem):
        with pytest.raises(ReleaseError, match="more than one PEM block"):
            verify_release(release, several)
    for padded in (b"trusted key:\n" + public_pem, public_pem + b"# and more\n"):
        with pytest.raises(ReleaseError, match="not a PEM public key alone"):
            verify_release(release, padded)
    with pytest.raises(ReleaseError, match="not an Ed25519 one"):
        verify_release(release, pem_of(ec.generate_private_key(ec.SECP256R1())))
    private_pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    with pytest.raises(ReleaseError, match="not a PEM public key"):
        verify_release(release, private_pem)
    # Surrounding blank lines and CRLF line ends are still the one key.
    crlf = b"\r\n" + public_pem.replace(b"\n", b"\r\n") + b"\n"
    assert verify_release(release, crlf)["version"] == "0.1.0"


def resign(release: Path, signer: LocalKms, manifest: bytes) -> None:
    """Replace the manifest by `manifest`, genuinely signed with the release key: what the
    key holder's mistake (or a second signing tool) could publish."""
    (release / MANIFEST).write_bytes(manifest)
    (release / SIGNATURE).write_bytes(signer.sign(RELEASE_KEY, manifest).value)


def genuine_manifest(release: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((release / MANIFEST).read_bytes())
    return manifest


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        # Two readings of one manifest: Python's json takes the last, other parsers the first.
        (
            lambda m, raw: raw.replace(b'"artifacts":', b'"artifacts":[],"artifacts":', 1),
            "repeats a key",
        ),
        (lambda m, raw: json.dumps(m, indent=1).encode(), "not canonical JSON"),
        (lambda m, raw: raw.replace(b'"ramparts"', b'"\\u0072amparts"', 1), "not canonical JSON"),
        (lambda m, raw: raw + b"\n", "not canonical JSON"),
        (
            lambda m, raw: canonical_json(
                m | {"signing_key": m["signing_key"] | {"public_key_sha256": "0" * 64}}
            ),
            "names another signing key",
        ),
        (
            lambda m, raw: canonical_json(
                m | {"signing_key": m["signing_key"] | {"algorithm": "Ed448"}}
            ),
            "names another signing key",
        ),
        (
            lambda m, raw: canonical_json(
                m | {"artifacts": [a | {"size": str(a["size"])} for a in m["artifacts"]]}
            ),
            "in another shape",
        ),
        (
            lambda m, raw: canonical_json(
                m | {"artifacts": [a | {"sha256": a["sha256"].upper()} for a in m["artifacts"]]}
            ),
            "in another shape",
        ),
        (
            lambda m, raw: canonical_json(
                m | {"artifacts": [*m["artifacts"], m["artifacts"][0] | {"name": WHEEL.upper()}]}
            ),
            f"bad artifact name '{WHEEL.upper()}'",
        ),
        (lambda m, raw: canonical_json([m]), "not a ramparts-release/1 manifest"),
    ],
)
def test_a_genuinely_signed_manifest_must_still_be_well_formed(
    release: Path,
    public_pem: bytes,
    signer: LocalKms,
    edit: Callable[[dict[str, Any], bytes], bytes],
    problem: str,
) -> None:
    resign(release, signer, edit(genuine_manifest(release), (release / MANIFEST).read_bytes()))
    with pytest.raises(ReleaseError, match=problem):
        verify_release(release, public_pem)


def test_names_one_case_insensitive_file_system_would_merge_are_not_signed(
    tmp_path: Path, signer: LocalKms
) -> None:
    directory = tmp_path / "dist"
    directory.mkdir()
    (directory / WHEEL).write_bytes(b"wheel")
    (directory / SBOM).write_text("{}")
    (directory / SBOM.upper()).write_text("{}")
    with pytest.raises(ReleaseError, match="is not a plain release file"):
        sign_release(directory, signer)
    assert not (directory / MANIFEST).exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_alone_verifies_the_manifest(
    release: Path, public_pem: bytes, tmp_path: Path
) -> None:
    """The documented check without Ramparts: the manifest file is exactly the signed bytes."""
    key_file = tmp_path / "release.pub"
    key_file.write_bytes(public_pem)
    command = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(key_file),
        "-rawin",
        "-in",
        str(release / MANIFEST),
        "-sigfile",
        str(release / SIGNATURE),
    ]
    genuine = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert genuine.returncode == 0, genuine.stderr
    assert "Signature Verified Successfully" in genuine.stdout
    flip_one_byte(release / MANIFEST, 20)
    edited = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert edited.returncode != 0
