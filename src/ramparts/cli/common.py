"""What the command groups share: the console, the --json option, the usage error, and the
owner's database connection with the services built on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ramparts.apps import app_roles, encrypted_columns_of, installed_apps, selected_apps
from ramparts.audit.services import AuditLog, audit_redactor
from ramparts.config import Settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, open_database
from ramparts.identity.services import Provisioning, TenantRecord

__all__ = [
    "JsonOption",
    "UsageError",
    "audit_log",
    "console",
    "open_provisioning",
    "print_result",
    "with_owner",
    "with_tenant",
]

T = TypeVar("T")

console = Console()

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


class UsageError(Exception):
    """The command cannot run as asked (exit 2)."""


async def with_owner(urls: DatabaseUrls, work: Callable[[Database], Awaitable[T]]) -> T:
    owner = Database(urls.owner, pool_size=1)
    try:
        return await work(owner)
    finally:
        await owner.dispose()


def audit_log(settings: Settings, owner: Database, kms: Kms) -> AuditLog:
    return AuditLog(owner, audit_redactor(settings, kms))


def open_provisioning(settings: Settings, owner: Database) -> Provisioning:
    """Provisioning that grants `admin` and the served apps' roles, and rotates and shreds
    the encrypted columns of every installed app: one served before and no longer still has
    its data in the database (a never-served one has no tables, and is skipped)."""
    kms = open_kms(settings)
    return Provisioning(
        owner,
        kms,
        audit_log(settings, owner, kms),
        roles=app_roles(selected_apps(settings.apps)),
        app_columns=encrypted_columns_of(installed_apps().values()),
    )


def with_tenant(
    settings: Settings, work: Callable[[Provisioning, TenantRecord], Awaitable[T]], slug: str
) -> T:
    """Run `work` as the database owner on the tenant `slug` (a usage error when none)."""

    async def run(owner: Database) -> T:
        provisioning = open_provisioning(settings, owner)
        tenant = await provisioning.tenant(slug)
        if tenant is None:
            raise UsageError(f"no tenant {slug!r}")
        return await work(provisioning, tenant)

    with open_database(settings) as urls:
        return asyncio.run(with_owner(urls, run))


def print_result(result: dict[str, Any], as_json: bool, line: str) -> None:
    """The result as one JSON object, or `line` for people."""
    if as_json:
        print(json.dumps(result))
    else:
        console.print(line)
