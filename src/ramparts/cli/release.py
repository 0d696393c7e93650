"""`ramparts release`: build the wheel and its SBOM, sign their manifest with the KMS's release
key, and verify a release with the published public key alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from ramparts.cli.common import JsonOption, print_result
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import RELEASE_KEY
from ramparts.release.build import BUILD_STEPS, build_release
from ramparts.release.manifest import (
    MANIFEST,
    SIGNATURE,
    ReleaseError,
    sign_release,
    verify_release,
)

__all__ = ["release_app"]

release_app = typer.Typer(
    help="Signed releases: the wheel, its CycloneDX SBOM and a signed manifest.",
    no_args_is_help=True,
)

DirectoryArgument = Annotated[Path, typer.Argument(help="The release directory.", file_okay=False)]


@release_app.command("build")
def release_build(
    out: Annotated[
        Path, typer.Option("--out", help="Release directory: new or empty.", file_okay=False)
    ] = Path("dist"),
    project: Annotated[
        Path,
        typer.Option("--project", help="The project root (pyproject.toml, requirements/)."),
    ] = Path(),
    as_json: JsonOption = False,
) -> None:
    """Build the wheel and its CycloneDX SBOM into OUT.

    The SBOM (JSON) lists the environment the wheel runs in: the hash-checked runtime lock plus
    the wheel, installed into a throwaway virtualenv, each component with its SHA-256."""
    with Progress(console=Console(stderr=True), transient=True, disable=as_json) as bar:
        task = bar.add_task("building the release", total=BUILD_STEPS)
        started = 0

        def step(description: str) -> None:
            nonlocal started
            bar.update(task, description=description, completed=started)
            started += 1

        result = build_release(project.resolve(), out, step=step)
    print_result(
        result,
        as_json,
        f"built [bold]{result['wheel']}[/] and [bold]{result['sbom']}[/] "
        f"({result['components']} components) in {out}",
    )


@release_app.command("sign")
def release_sign(
    directory: DirectoryArgument = Path("dist"),
    as_json: JsonOption = False,
) -> None:
    """Sign the release in DIRECTORY with the KMS's release key.

    Writes manifest.json (every artifact's name, size and SHA-256) and its Ed25519 signature
    manifest.json.sig, made inside the KMS by the release key (`keys rotate --release`)."""
    manifest = sign_release(directory, open_kms(load_settings()), key=RELEASE_KEY)
    key = manifest["signing_key"]
    print_result(
        manifest,
        as_json,
        f"signed {len(manifest['artifacts'])} artifact(s) of {manifest['name']} "
        f"{manifest['version']} with [bold]{key['ref']}[/] "
        f"(public key SHA-256 {key['public_key_sha256']})",
    )


@release_app.command("verify")
def release_verify(
    directory: DirectoryArgument = Path("dist"),
    public_key: Annotated[
        Path,
        typer.Option(
            "--public-key",
            help="The release public key (PEM), as published: `ramparts keys public-key`.",
            dir_okay=False,
        ),
    ] = Path("release.pub"),
    as_json: JsonOption = False,
) -> None:
    """Verify the release in DIRECTORY with the published public key.

    Checks the manifest's signature with the key, then every artifact's size and SHA-256, and
    that DIRECTORY holds nothing else; exit 1, naming what failed, on any difference. Needs no
    KMS and no database."""
    try:
        manifest = verify_release(directory, public_key.read_bytes())
    except (ReleaseError, OSError) as exc:
        message = str(exc) if isinstance(exc, ReleaseError) else f"{public_key}: {exc.strerror}"
        if as_json:
            print(json.dumps({"verified": False, "directory": str(directory), "error": message}))
        print(f"ramparts: error: {message}", file=sys.stderr)
        raise typer.Exit(1) from None
    result = {"verified": True, "directory": str(directory), "manifest": manifest}
    print_result(
        result,
        as_json,
        f"[bold green]verified[/] {manifest['name']} {manifest['version']}: "
        f"{MANIFEST} signed by {manifest['signing_key']['ref']}, {SIGNATURE} valid, "
        f"{len(manifest['artifacts'])} artifact(s) intact",
    )
