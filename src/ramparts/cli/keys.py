"""`ramparts keys`: token signing keys, tenant data keys, KMS keys, the release key, and the
model API keys (each tenant's own, or the installation's shared one)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress

from ramparts.ai.model_keys import SHARED_KEY_NAME, fingerprint, tenant_key_name
from ramparts.cli.common import (
    JsonOption,
    UsageError,
    open_provisioning,
    print_result,
    with_owner,
    with_tenant,
)
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import RELEASE_KEY, SYSTEM_KEY
from ramparts.db.engine import Database, open_database
from ramparts.identity.services import Provisioning, TenantRecord
from ramparts.identity.tokens import overlap_for

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help="Token signing keys, tenant data keys, KMS keys, the release key and model API keys.",
    no_args_is_help=True,
)
OptionalTenant = Annotated[
    str | None, typer.Option("--tenant", help="Tenant slug: rotate its data key.")
]


@keys_app.command("rotate")
def keys_rotate(
    tenant: OptionalTenant = None,
    kms: Annotated[
        bool, typer.Option("--kms", help="Rotate the KMS key (the tenant's, or the system key).")
    ] = False,
    release: Annotated[
        bool,
        typer.Option("--release", help="Make, or rotate, the KMS's release signing key."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Without options: a new token signing key (predecessors stay published for the overlap
    window). With --tenant: a new data key version for the tenant, then every sealed field
    re-encrypted under it (resumable: `keys reencrypt`). With --kms: a new KMS key version,
    and the tenant's data keys re-wrapped under it. With --release: the first, or a new,
    version of the Ed25519 key that signs releases (publish it: `keys public-key`)."""
    settings = load_settings()
    if release:
        if kms or tenant is not None:
            raise UsageError("--release rotates the release key alone: drop --kms and --tenant")
        key = open_kms(settings).rotate_signing_key(RELEASE_KEY)
        print_result({"kms_key": key}, as_json, f"release signing key now [bold]{key}[/]")
    elif kms and tenant is None:
        key = open_kms(settings).rotate(SYSTEM_KEY)
        print_result({"kms_key": key}, as_json, f"system KMS key now [bold]{key}[/]")
    elif kms and tenant is not None:

        async def rotate_kms(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
            return await provisioning.rotate_kms_key(record)

        result = with_tenant(settings, rotate_kms, tenant)
        print_result(
            result,
            as_json,
            f"KMS key of {tenant} now [bold]{result['kms_key']}[/]; "
            f"{result['rewrapped']} data key(s) re-wrapped",
        )
    elif tenant is not None:

        async def rotate_data(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
            version = await provisioning.rotate_data_key(record)
            done = await _reencrypt_with_bar(provisioning, record, as_json)
            return {"tenant": record.slug, "data_key_version": version, "reencrypted": done}

        result = with_tenant(settings, rotate_data, tenant)
        print_result(
            result,
            as_json,
            f"data key of {tenant} now version [bold]{result['data_key_version']}[/]; "
            f"{result['reencrypted']} field(s) re-encrypted",
        )
    else:

        async def rotate_signing(owner: Database) -> dict[str, Any]:
            return await open_provisioning(settings, owner).rotate_signing_key(
                overlap=overlap_for(settings.access_token_seconds)
            )

        with open_database(settings) as urls:
            result = asyncio.run(with_owner(urls, rotate_signing))
        print_result(
            result,
            as_json,
            f"current signing key [bold]{result['kid']}[/]; "
            f"published: {', '.join(result['published'])}",
        )


@keys_app.command("set-model-key")
def keys_set_model_key(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant slug: set its own model API key.")
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="Set the installation's key instead (used by tenants without one only "
            "under RAMPARTS_MODEL_KEYS=shared, never in prod).",
        ),
    ] = False,
    remove: Annotated[
        bool, typer.Option("--remove", help="Remove the key instead of setting one.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Store a model API key in the KMS (`model/openai/api-key/<tenant id>`, or
    `model/openai/api-key` with --shared), read from standard input or a hidden prompt,
    never from the command line. Every server uses it within seconds; the output names it
    by fingerprint only."""
    if (tenant is not None) == shared:
        raise UsageError("name one key: --tenant SLUG or --shared")
    settings = load_settings()
    if tenant is not None:

        async def tenant_of(_: Provisioning, record: TenantRecord) -> TenantRecord:
            return record

        name, whose = tenant_key_name(with_tenant(settings, tenant_of, tenant).id), tenant
    else:
        name, whose = SHARED_KEY_NAME, "the installation (shared)"
    key = SecretStr("") if remove else _key_from_input()
    # A removed key is stored as nothing: the KMS keeps no deletion of a secret.
    open_kms(settings).write_secret(name, key)
    result: dict[str, Any] = {"tenant": tenant, "shared": shared, "removed": remove}
    if remove:
        print_result(result, as_json, f"model API key of {whose} removed")
        return
    result["fingerprint"] = fingerprint(key)
    print_result(
        result, as_json, f"model API key of {whose} set (fingerprint {result['fingerprint']})"
    )


def _key_from_input() -> SecretStr:
    """The key from a hidden prompt on a terminal, else the first line of standard input."""
    if sys.stdin.isatty():
        typed = typer.prompt("Model API key", hide_input=True)
    else:
        typed = sys.stdin.readline()
    key = typed.strip()
    if not key or not key.isprintable() or any(c.isspace() for c in key):
        raise UsageError("a model API key is one line of printable characters, no spaces")
    return SecretStr(key)


@keys_app.command("public-key")
def keys_public_key(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the PEM here instead of stdout.", dir_okay=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The public half of the newest release signing key, as PEM (SubjectPublicKeyInfo): what
    users verify releases with (`ramparts release verify --public-key`, or openssl)."""
    public = open_kms(load_settings()).public_key(RELEASE_KEY)
    if public is None:
        raise UsageError(
            "no release signing key yet: make one with `ramparts keys rotate --release`"
        )
    pem = public.pem()
    if out is not None:
        out.write_bytes(pem)
    if out is None and not as_json:
        print(pem.decode(), end="")
        return
    result = {"kms_key": public.ref, "public_key_sha256": public.fingerprint, "pem": pem.decode()}
    print_result(result, as_json, f"wrote {public.ref} to {out} (SHA-256 {public.fingerprint})")


@keys_app.command("reencrypt")
def keys_reencrypt(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant slug.")],
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt the tenant's sealed fields still under an older data key version: finishes
    an interrupted `keys rotate --tenant`; a no-op when nothing is left."""
    settings = load_settings()

    async def run(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
        return {
            "tenant": record.slug,
            "reencrypted": await _reencrypt_with_bar(provisioning, record, as_json),
        }

    result = with_tenant(settings, run, tenant)
    print_result(result, as_json, f"{result['reencrypted']} field(s) re-encrypted")


async def _reencrypt_with_bar(provisioning: Provisioning, record: TenantRecord, quiet: bool) -> int:
    with Progress(console=Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task(f"re-encrypting {record.slug}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return await provisioning.reencrypt(record, progress=advance)
