"""The signed release manifest: what a release holds, signed by the KMS's release key.

A release is one directory: its artifacts (the wheel and its SBOM), `manifest.json` and
`manifest.json.sig`. The manifest lists every artifact's file name, size and SHA-256, the
release's name and version, when it was signed, and the signing key (its KMS reference, the
algorithm, Ed25519, and the SHA-256 fingerprint of its raw public key).

The signed bytes are the manifest file, byte for byte: canonical JSON, that is
`json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)` encoded as
ASCII with no trailing newline (for this content, ASCII strings and integers only, the same
bytes as RFC 8785 JCS). `manifest.json.sig` holds the raw 64-byte Ed25519 signature (RFC 8032)
of those bytes. Anyone can check it without Ramparts:

    openssl pkeyutl -verify -pubin -inkey release.pub -rawin \\
        -in manifest.json -sigfile manifest.json.sig
    sha256sum ramparts-*.whl ramparts-*.cdx.json   # against the manifest's "sha256" values
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ramparts.crypto.kms import RELEASE_KEY, Kms
from ramparts.crypto.signing import (
    ALGORITHM,
    SigningKeyError,
    load_public_key_pem,
    public_key_fingerprint,
    signature_verifies,
)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "ReleaseError",
    "canonical_json",
    "sign_release",
    "verify_release",
]

FORMAT = "ramparts-release/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
# A file name and nothing else: no directory, no dot-files, no `..`.
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
WHEEL_NAME = re.compile(r"([A-Za-z0-9_.]+)-([^-]+)-[^-]+-[^-]+-[^-]+\.whl")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20


class ReleaseError(Exception):
    """A release cannot be built or signed, or does not verify; the message names what."""


def canonical_json(value: Any) -> bytes:
    """The exact bytes that are signed (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str


def _file_digest(path: Path) -> Artifact:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Artifact(path.name, size, digest.hexdigest())


def _release_files(directory: Path) -> list[Path]:
    """Every entry of the release directory but the manifest and its signature; anything but
    a regular file with a plain name is refused (a symlink could point anywhere)."""
    if not directory.is_dir():
        raise ReleaseError(f"{directory} is not a directory")
    files: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name in {MANIFEST, SIGNATURE}:
            continue
        if (
            entry.is_symlink()
            or not entry.is_file()
            or not ARTIFACT_NAME.fullmatch(entry.name)
            or entry.name.lower() in {MANIFEST, SIGNATURE}
            or any(entry.name.lower() == other.name.lower() for other in files)
        ):
            raise ReleaseError(f"{entry.name!r} in {directory} is not a plain release file")
        files.append(entry)
    return files


def sign_release(directory: Path, kms: Kms, *, key: str = RELEASE_KEY) -> dict[str, Any]:
    """Write `manifest.json` and `manifest.json.sig` for the artifacts in `directory`, signed
    by the KMS signing key `key`; returns the manifest."""
    if (directory / MANIFEST).exists() or (directory / SIGNATURE).exists():
        raise ReleaseError(f"{directory} is already signed: build a new release to sign again")
    files = _release_files(directory)
    wheels = [WHEEL_NAME.fullmatch(path.name) for path in files if path.name.endswith(".whl")]
    if len(wheels) != 1 or wheels[0] is None:
        raise ReleaseError(f"{directory} must hold exactly one wheel, found {len(wheels)}")
    public = kms.public_key(key)
    if public is None:
        raise ReleaseError(
            f"no signing key {key!r} in the KMS: make it with `ramparts keys rotate --release`"
        )
    manifest = {
        "format": FORMAT,
        "name": wheels[0][1].replace("_", "-"),
        "version": wheels[0][2],
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "artifacts": [vars(_file_digest(path)) for path in files],
        "signing_key": {
            "ref": public.ref,
            "algorithm": ALGORITHM,
            "public_key_sha256": public.fingerprint,
        },
    }
    signed = canonical_json(manifest)
    signature = kms.sign(key, signed)
    # Checked here with the public key the manifest names: a key rotated between the two
    # calls, or a KMS answering with anything else, never yields a release that cannot verify.
    if signature.ref != public.ref or not signature_verifies(
        load_public_key_pem(public.pem()), signature.value, signed
    ):
        raise ReleaseError(f"the KMS signature by {signature.ref} does not verify: sign again")
    _write_atomically(directory / SIGNATURE, signature.value)
    _write_atomically(directory / MANIFEST, signed)
    return manifest


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def verify_release(directory: Path, public_key_pem: bytes) -> dict[str, Any]:
    """Check the manifest's signature against the given public key (one PEM key alone), that
    the manifest is canonical and names that key, then every artifact's size and SHA-256, and
    that the directory holds nothing else; returns the manifest.
    Any failure raises ReleaseError naming the first thing that does not hold."""
    try:
        public = load_public_key_pem(public_key_pem)
    except SigningKeyError as exc:
        raise ReleaseError(f"the public key file holds {exc}") from None
    fingerprint = public_key_fingerprint(public.public_bytes_raw())
    try:
        signed = (directory / MANIFEST).read_bytes()
        signature = (directory / SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise ReleaseError(
            f"{Path(str(exc.filename)).name} is missing: not a signed release"
        ) from None
    if not signature_verifies(public, signature, signed):
        raise ReleaseError(_why_unverified(signed, fingerprint))
    manifest = _well_formed(signed, fingerprint)
    _check_artifacts(directory, manifest["artifacts"])
    return manifest


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ReleaseError(f"{MANIFEST} repeats a key: not canonical JSON")
    return dict(pairs)


def _well_formed(signed: bytes, fingerprint: str) -> dict[str, Any]:
    """The signed manifest, read only as `sign_release` writes it: canonical JSON (one
    reading for every parser), of this format, naming the very key it was verified with.
    A signature alone does not make it so: the release key signs bytes, not their meaning."""
    try:
        manifest = json.loads(signed, object_pairs_hook=_no_duplicate_keys)
    except ValueError:
        raise ReleaseError(f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ReleaseError(f"{MANIFEST} is not a {FORMAT} manifest")
    if canonical_json(manifest) != signed:
        raise ReleaseError(f"{MANIFEST} is not canonical JSON")
    key = manifest.get("signing_key")
    if (
        not isinstance(key, dict)
        or key.get("algorithm") != ALGORITHM
        or key.get("public_key_sha256") != fingerprint
    ):
        raise ReleaseError(f"{MANIFEST} names another signing key than {fingerprint[:16]}…")
    artifacts = manifest.get("artifacts")
    fields = {"name": str, "size": int, "sha256": str}
    if not isinstance(artifacts, list) or not all(
        isinstance(artifact, dict)
        and artifact.keys() == fields.keys()
        and all(type(artifact[name]) is kind for name, kind in fields.items())
        and SHA256_HEX.fullmatch(artifact["sha256"])
        for artifact in artifacts
    ):
        raise ReleaseError(f"{MANIFEST} lists its artifacts in another shape than {FORMAT}")
    return manifest


def _why_unverified(signed: bytes, fingerprint: str) -> str:
    """The most precise account of a bad signature that the (untrusted) manifest allows."""
    try:
        claimed = json.loads(signed)["signing_key"]["public_key_sha256"]
    except (ValueError, KeyError, TypeError):
        claimed = None
    # Unverified text reaches the terminal only as a hex digest: never escapes or other text.
    if isinstance(claimed, str) and SHA256_HEX.fullmatch(claimed) and claimed != fingerprint:
        return (
            f"{MANIFEST} is signed by another key (fingerprint {claimed[:16]}…), "
            f"not by {fingerprint[:16]}…"
        )
    return (
        f"the signature of {MANIFEST} does not verify with key {fingerprint[:16]}…: "
        "the manifest or its signature was changed"
    )


def _check_artifacts(directory: Path, listed: list[dict[str, Any]]) -> None:
    names = set()
    folded = set()  # names that one case-insensitive file system would store as one file
    for artifact in listed:
        name = artifact["name"]
        if (
            not ARTIFACT_NAME.fullmatch(name)
            or name.lower() in {MANIFEST, SIGNATURE}
            or name.lower() in folded
        ):
            raise ReleaseError(f"{MANIFEST} lists a bad artifact name {name[:80]!r}")
        names.add(name)
        folded.add(name.lower())
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise ReleaseError(f"artifact {name} is missing")
        found = _file_digest(path)
        if found.size != artifact["size"]:
            raise ReleaseError(
                f"artifact {name} is {found.size} bytes; the manifest says {artifact['size']}"
            )
        if not hmac.compare_digest(found.sha256, artifact["sha256"]):
            raise ReleaseError(f"artifact {name} does not match its SHA-256 in the manifest")
    extra = sorted(
        p.name for p in directory.iterdir() if p.name not in names | {MANIFEST, SIGNATURE}
    )
    if extra:
        raise ReleaseError(f"{', '.join(extra)} in {directory} is not in the manifest")
