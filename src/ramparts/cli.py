"""The `ramparts` command.

Exit codes: 0 success; 1 the operation failed (database unreachable, migration error);
2 bad usage or configuration; 3 refused to start (the production guard, or a runtime database
role with more power than it may have).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from contextlib import nullcontext, suppress
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import psycopg
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ramparts.audit.events import SYSTEM_TENANT, Action, Actor, Decision, Resource
from ramparts.audit.sequencer import Sequencer, SequencerStalledError
from ramparts.audit.services import (
    AuditLog,
    Checkpoint,
    Checkpointer,
    audit_redactor,
    ensure_audit_key,
)
from ramparts.audit.verify import (
    ChainReport,
    chain_length,
    chain_tenants,
    export_events,
    load_checkpoints,
    queue_lag,
    verify_chain,
)
from ramparts.config import ConfigError, Profile, Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.fields import FieldDecryptionError
from ramparts.crypto.keys import KeyShreddedError
from ramparts.crypto.kms import SYSTEM_KEY, Kms, KmsError
from ramparts.crypto.scanner import scan_paths, tracked_files
from ramparts.crypto.sealing import RowsLockedError
from ramparts.db.engine import (
    Database,
    DatabaseUrls,
    OwnerRequiredError,
    UnsafeRuntimeRoleError,
    libpq,
    open_database,
)
from ramparts.db.migrate import MigrationError, upgrade
from ramparts.demo import seed_demo
from ramparts.identity.mtls import certificate_thumbprint
from ramparts.identity.services import Provisioning, TenantRecord
from ramparts.identity.tokens import overlap_for
from ramparts.logs import log_to_stderr
from ramparts.policy.engine import POLICY_DIR, PolicyEngine, PolicyError
from ramparts.policy.matrix import (
    SNAPSHOT,
    Change,
    changes,
    decide_all,
    read_snapshot,
    snapshot_text,
)
from ramparts.runtime import (
    ProductionGuardError,
    ServeSizingError,
    guard_production,
    serve,
    worker_count,
)
from ramparts.web.pages import WEB_CLIENT_ID, web_client_redirect_uri

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    help="Ramparts: a secure-by-default runtime for AI-assisted business apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


class UsageError(Exception):
    """The command cannot run as asked (exit 2)."""


class PolicyInvalidError(Exception):
    """The policies do not validate (exit 1)."""


def _require_dev(settings: Settings, command: str) -> None:
    if settings.profile is not Profile.DEV:
        raise UsageError(
            f"{command} runs only under the dev profile (RAMPARTS_PROFILE={settings.profile})"
        )


async def _with_owner(urls: DatabaseUrls, work: Callable[[Database], Awaitable[T]]) -> T:
    owner = Database(urls.owner, pool_size=1)
    try:
        return await work(owner)
    finally:
        await owner.dispose()


def _audit(settings: Settings, owner: Database, kms: Kms) -> AuditLog:
    return AuditLog(owner, audit_redactor(settings, kms))


def _provisioning(settings: Settings, owner: Database) -> Provisioning:
    kms = open_kms(settings)
    return Provisioning(owner, kms, _audit(settings, owner, kms))


def _migrate(settings: Settings, urls: DatabaseUrls) -> dict[str, Any]:
    """Schema to head, then what the schema alone cannot hold: signing keys (tokens, audit
    checkpoints) and the web client registered for this RAMPARTS_PUBLIC_URL."""
    before, after = upgrade(urls)

    async def bootstrap(owner: Database) -> str | None:
        kms = open_kms(settings)
        provisioning = Provisioning(owner, kms, _audit(settings, owner, kms))
        async with owner.session() as session:
            await ensure_audit_key(session, kms)
        redirect = web_client_redirect_uri(settings.public_url)
        await provisioning.ensure_public_client(
            client_id=WEB_CLIENT_ID,
            name="Ramparts web app",
            redirect_uri=redirect,
            post_logout_redirect_uri=f"{settings.public_url}/",
        )
        return await provisioning.ensure_signing_key(
            overlap=overlap_for(settings.access_token_seconds)
        )

    created_key = asyncio.run(_with_owner(urls, bootstrap))
    return {
        "from": before,
        "to": after,
        "changed": before != after,
        "signing_key_created": created_key,
    }


def _seed(settings: Settings, urls: DatabaseUrls) -> dict[str, Any]:
    kms = open_kms(settings)

    async def seed(owner: Database) -> dict[str, Any]:
        return await seed_demo(
            owner,
            kms,
            _audit(settings, owner, kms),
            public_url=settings.public_url,
        )

    # Opened first: if the credentials cannot be kept, nothing is reset.
    with _credentials_file(settings) as file:
        report = asyncio.run(_with_owner(urls, seed))
        file.truncate(0)  # only now: until the seed succeeds, the old credentials still hold
        json.dump(report, file, indent=2)
        file.write("\n")
    return report


#: Where `seed-demo` and `demo` leave the demo credentials, readable by their owner only.
DEMO_CREDENTIALS = "demo-credentials.json"


def _credentials_file(settings: Settings) -> TextIO:
    """RAMPARTS_HOME's credentials file, mode 0600, for the seed's report (what `seed-demo
    --json` prints): a user whose terminal scrolled past it, or who ran the demo under a log,
    can still sign in."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = settings.home / DEMO_CREDENTIALS
    try:
        # O_NOFOLLOW: a symlink planted there must not carry the passwords elsewhere.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    except OSError as exc:
        raise UsageError(f"cannot write the demo credentials to {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


def _print_credentials(settings: Settings, report: dict[str, Any]) -> None:
    """Each credential whole on a line of its own: a table would cut them to the terminal."""
    # Plain print: Rich would wrap a long path (or a password) to the terminal's width.
    print("Demo users (new credentials on every seed; also saved, readable by you only, in)")
    print(f"  {settings.home / DEMO_CREDENTIALS}")
    for tenant in report["tenants"]:
        print(f"\n{tenant['slug']} (region {tenant['region']})")
        for user in report["users"]:
            if user["tenant"] == tenant["slug"]:
                print(f"  {user['username']} ({', '.join(user['roles'])})")
                print(f"      password     {user['password']}")
                print(f"      TOTP secret  {user['totp_secret']}")
    print()


@app.command()
def migrate(as_json: JsonOption = False) -> None:
    """Create the runtime role and bring the schema to the latest revision."""
    settings = load_settings()
    with open_database(settings) as urls:
        result = _migrate(settings, urls)
    if as_json:
        print(json.dumps(result))
    else:
        console.print(f"schema at [bold]{result['to']}[/] (was {result['from'] or 'empty'})")


@app.command("seed-demo")
def seed_demo_command(as_json: JsonOption = False) -> None:
    """Create the demo tenants, users and quotes, printing fresh passwords (dev only)."""
    settings = load_settings()
    _require_dev(settings, "seed-demo")
    with open_database(settings) as urls:
        report = _seed(settings, urls)
    if as_json:
        print(json.dumps(report))
    else:
        _print_credentials(settings, report)


@app.command("serve")
def serve_command(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (enables TLS 1.3).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA for client certificates (service mTLS).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: one per usable core, or 1 without "
            "RAMPARTS_REDIS_URL). More than 1 needs RAMPARTS_REDIS_URL, so the assistant's "
            "limits are shared, not multiplied.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (uvloop, httptools, one process per worker).

    The database connections (RAMPARTS_DB_MAX_CONNECTIONS, default half of what the server
    accepts) are divided over the workers; it refuses to start when they cannot go round.
    """
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    settings = load_settings()
    # Configuration first: refuse before starting anything.
    worker_count(workers, settings)
    guard_production(settings)
    with open_database(settings) as urls:
        serve(
            settings,
            urls,
            host=host,
            port=port,
            workers=workers,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
        )


@app.command()
def demo(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """Start the database, migrate, seed the demo data and serve it: one command."""
    settings = load_settings()
    _require_dev(settings, "demo")
    if "public_url" not in settings.model_fields_set:
        # The demo is reached where it listens; issuer and redirect URIs must say the same.
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    where = "embedded PostgreSQL" if settings.embedded_database else "RAMPARTS_DATABASE_URL"
    with open_database(settings) as urls:
        with console.status(f"Migrating and seeding {where}…"):
            _migrate(settings, urls)
            report = _seed(settings, urls)
        _print_credentials(settings, report)
        console.print(f"Serving on [bold]http://{host}:{port}[/] — Ctrl-C to stop.")
        serve(settings, urls, host=host, port=port)


keys_app = typer.Typer(
    help="Token signing keys, tenant data keys and KMS keys.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
OptionalTenant = Annotated[
    str | None, typer.Option("--tenant", help="Tenant slug: rotate its data key.")
]


@keys_app.command("rotate")
def keys_rotate(
    tenant: OptionalTenant = None,
    kms: Annotated[
        bool, typer.Option("--kms", help="Rotate the KMS key (the tenant's, or the system key).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Without options: a new token signing key (predecessors stay published for the overlap
    window). With --tenant: a new data key version for the tenant, then every sealed field
    re-encrypted under it (resumable: `keys reencrypt`). With --kms: a new KMS key version,
    and the tenant's data keys re-wrapped under it."""
    settings = load_settings()
    if kms and tenant is None:
        key = open_kms(settings).rotate(SYSTEM_KEY)
        _report({"kms_key": key}, as_json, f"system KMS key now [bold]{key}[/]")
    elif kms and tenant is not None:

        async def rotate_kms(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
            return await provisioning.rotate_kms_key(record)

        result = _owned_tenant(settings, rotate_kms, tenant)
        _report(
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

        result = _owned_tenant(settings, rotate_data, tenant)
        _report(
            result,
            as_json,
            f"data key of {tenant} now version [bold]{result['data_key_version']}[/]; "
            f"{result['reencrypted']} field(s) re-encrypted",
        )
    else:

        async def rotate_signing(owner: Database) -> dict[str, Any]:
            return await _provisioning(settings, owner).rotate_signing_key(
                overlap=overlap_for(settings.access_token_seconds)
            )

        with open_database(settings) as urls:
            result = asyncio.run(_with_owner(urls, rotate_signing))
        _report(
            result,
            as_json,
            f"current signing key [bold]{result['kid']}[/]; "
            f"published: {', '.join(result['published'])}",
        )


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

    result = _owned_tenant(settings, run, tenant)
    _report(result, as_json, f"{result['reencrypted']} field(s) re-encrypted")


async def _reencrypt_with_bar(provisioning: Provisioning, record: TenantRecord, quiet: bool) -> int:
    with Progress(console=Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task(f"re-encrypting {record.slug}", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return await provisioning.reencrypt(record, progress=advance)


def _report(result: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        console.print(line)


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


@app.command("killswitch")
def killswitch(
    state: Annotated[Switch, typer.Argument(help="on: stop the assistant; off: let it run.")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant slug (default: every tenant).")
    ] = None,
    tool: Annotated[str, typer.Option("--tool", help="One tool (default: all of them).")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Stop (or restart) the AI assistant, globally, for one tenant, or for one tool: every
    server process sees it at its next request or tool call."""
    if not re.fullmatch(r"[a-z0-9_]{0,64}", tool):
        raise UsageError(f"--tool {tool!r}: a tool name is lowercase letters, digits and _")
    settings = load_settings()

    async def switch(owner: Database) -> dict[str, Any]:
        kms = open_kms(settings)
        audit = _audit(settings, owner, kms)
        record = None
        if tenant is not None:
            record = await Provisioning(owner, kms, audit).tenant(tenant)
            if record is None:
                raise UsageError(f"no tenant {tenant!r}")
        async with owner.tenant_session(record.id if record else SYSTEM_TENANT) as session:
            await session.execute(
                text(
                    "INSERT INTO ai_killswitch "
                    "(scope_tenant, tool, origin, engaged, reason, set_by) "
                    "VALUES (:tenant, :tool, 'operator', :engaged, :reason, 'ramparts-cli') "
                    "ON CONFLICT (COALESCE(scope_tenant, "
                    "'00000000-0000-0000-0000-000000000000'::uuid), tool, origin) DO UPDATE SET "
                    "engaged = excluded.engaged, reason = excluded.reason, "
                    "set_by = excluded.set_by, set_at = now()"
                ),
                {
                    "tenant": record.id if record else None,
                    "tool": tool,
                    "engaged": state is Switch.ON,
                    "reason": reason[:500],
                },
            )
            await audit.record(
                session,
                Actor.system("ramparts-cli"),
                Action.KILLSWITCH_SET,
                Resource("assistant", tool or "*"),
                Decision.ALLOW,
                {"engaged": state is Switch.ON, "reason": reason[:500]},
            )
        return {"tenant": tenant, "tool": tool or None, "engaged": state is Switch.ON}

    with open_database(settings) as urls:
        result = asyncio.run(_with_owner(urls, switch))
    scope = f"tenant {tenant}" if tenant else "every tenant"
    what = f"tool {tool}" if tool else "the assistant"
    _report(result, as_json, f"{what} is {'OFF' if state is Switch.ON else 'on'} for {scope}")


tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")


@tenants_app.command("delete")
def tenants_delete(
    slug: Annotated[str, typer.Argument(help="Tenant slug.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: this cannot be undone, even from a backup.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a tenant and crypto-shred it: its KMS key and data keys are destroyed, so its
    encrypted fields stay unreadable in every backup. The audit trail is kept."""
    if not yes:
        raise UsageError(f"deleting {slug!r} destroys its keys for good: add --yes to confirm")
    settings = load_settings()

    async def delete(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
        shredded = await provisioning.delete_tenant(record)
        return {"tenant": record.slug, "id": str(record.id), "data_keys_shredded": shredded}

    result = _owned_tenant(settings, delete, slug)
    _report(
        result,
        as_json,
        f"tenant {slug} deleted; {result['data_keys_shredded']} data key(s) shredded",
    )


clients_app = typer.Typer(help="Service clients (private_key_jwt or mTLS).", no_args_is_help=True)
app.add_typer(clients_app, name="clients")


def _owned_tenant(
    settings: Settings, work: Callable[[Provisioning, TenantRecord], Awaitable[T]], slug: str
) -> T:
    async def run(owner: Database) -> T:
        provisioning = _provisioning(settings, owner)
        tenant = await provisioning.tenant(slug)
        if tenant is None:
            raise UsageError(f"no tenant {slug!r}")
        return await work(provisioning, tenant)

    with open_database(settings) as urls:
        return asyncio.run(_with_owner(urls, run))


@clients_app.command("create")
def clients_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    name: Annotated[str, typer.Option(help="What the client is, for people.")],
    resource: Annotated[list[str], typer.Option(help="Audience it may request (repeat).")],
    role: Annotated[list[str] | None, typer.Option(help="Role its tokens carry (repeat).")] = None,
    jwks_file: Annotated[Path | None, typer.Option(help="Public JWKS (private_key_jwt).")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="PEM client certificate (mTLS).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a service client; it authenticates with a key it keeps, never a shared secret."""
    if (jwks_file is None) == (cert_file is None):
        raise UsageError("give exactly one of --jwks-file and --cert-file")
    credential: dict[str, Any] = {}
    if jwks_file is not None:
        credential["jwks"] = json.loads(jwks_file.read_text())
    if cert_file is not None:
        der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())
        credential["certificate_thumbprint"] = certificate_thumbprint(der)
    settings = load_settings()

    async def create(provisioning: Provisioning, record: TenantRecord) -> str:
        try:
            return await provisioning.create_service_client(
                record, name=name, resources=resource, roles=role or [], **credential
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    client_id = _owned_tenant(settings, create, tenant)
    if as_json:
        print(json.dumps({"client_id": client_id}))
    else:
        console.print(f"client_id [bold]{client_id}[/]")


@clients_app.command("revoke")
def clients_revoke(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    client_id: Annotated[str, typer.Argument(help="The client to revoke.")],
) -> None:
    """Revoke a service client: it gets no new tokens, and those it holds stop working now."""
    settings = load_settings()

    async def revoke(provisioning: Provisioning, record: TenantRecord) -> bool:
        return await provisioning.revoke_service_client(record, client_id)

    if not _owned_tenant(settings, revoke, tenant):
        raise UsageError(f"no active client {client_id!r} in tenant {tenant!r}")
    console.print(f"revoked {client_id}; its access tokens are refused from now on")


idp_app = typer.Typer(
    help="A tenant's own OIDC identity provider (federated login).", no_args_is_help=True
)
app.add_typer(idp_app, name="idp")


@idp_app.command("set")
def idp_set(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    issuer: Annotated[str, typer.Option(help="The IdP's issuer URL (https).")],
    client_id: Annotated[str, typer.Option(help="Our client id at the IdP.")],
    client_secret_file: Annotated[
        Path | None, typer.Option(help="File holding our client secret, if the IdP uses one.")
    ] = None,
    mfa_amr: Annotated[
        list[str] | None, typer.Option(help="IdP amr values that prove MFA (repeat).")
    ] = None,
    mfa_acr: Annotated[
        list[str] | None, typer.Option(help="IdP acr values that prove MFA (repeat).")
    ] = None,
) -> None:
    """Let the tenant's users sign in through their own IdP (redirect URI:
    <RAMPARTS_PUBLIC_URL>/login/sso/callback)."""
    secret = client_secret_file.read_text().strip() if client_secret_file else None
    settings = load_settings()

    async def configure(provisioning: Provisioning, record: TenantRecord) -> None:
        try:
            await provisioning.set_identity_provider(
                record,
                issuer=issuer,
                client_id=client_id,
                client_secret=secret,
                mfa_amr=mfa_amr,
                mfa_acr=mfa_acr,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    _owned_tenant(settings, configure, tenant)
    console.print(f"tenant {tenant} signs in through {issuer}")


@idp_app.command("link")
def idp_link(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    username: Annotated[str, typer.Option(help="The user here.")],
    subject: Annotated[str, typer.Option(help="The user's `sub` at the IdP.")],
) -> None:
    """Allow one IdP account to sign in as one user here."""
    settings = load_settings()

    async def link(provisioning: Provisioning, record: TenantRecord) -> None:
        try:
            await provisioning.link_username(record, username=username, subject=subject)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    _owned_tenant(settings, link, tenant)
    console.print(f"{username} may now sign in as IdP subject {subject}")


audit_app = typer.Typer(
    help="The audit trail: verify, checkpoint, export, and the queue of events not yet chained.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

TenantOption = Annotated[
    str | None,
    typer.Option(help="Tenant slug or id, or `system`; default: every chain."),
]


class ExportFormat(StrEnum):
    JSONL = "jsonl"


def _chains(conn: psycopg.Connection, tenant: str | None) -> list[uuid.UUID]:
    """The chains a command covers: one tenant (by slug or id, or `system`), or every chain."""
    if tenant is None:
        return chain_tenants(conn)
    if tenant == "system":
        return [SYSTEM_TENANT]
    with suppress(ValueError):
        return [uuid.UUID(tenant)]
    row = conn.execute("SELECT id FROM tenants WHERE slug = %s", (tenant,)).fetchone()
    if row is None:
        raise UsageError(f"no tenant {tenant!r}")
    return [row[0]]


def _sequence(settings: Settings, urls: DatabaseUrls) -> int:
    """Chain every committed queued event now, as the owner; how many were chained."""

    async def drain(owner: Database) -> int:
        return await Sequencer(owner, max_lag_seconds=settings.audit_max_lag_seconds).drain()

    return asyncio.run(_with_owner(urls, drain))


@audit_app.command("verify")
def audit_verify(
    tenant: TenantOption = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoints kept elsewhere (`audit checkpoint --json` output)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every hash and link; exit 1 and locate the first break when there is one.

    Events still queued (not yet chained) are counted per chain, with the oldest one's age."""
    external = (
        load_checkpoints(checkpoints.read_text().splitlines(), str(checkpoints))
        if checkpoints
        else []
    )
    settings = load_settings()
    with open_database(settings) as urls, psycopg.connect(libpq(urls.owner)) as conn:
        chains = _chains(conn, tenant)
        lengths = {chain: chain_length(conn, chain) for chain in chains}
        with Progress(console=Console(stderr=True), transient=True, disable=as_json) as bar:
            task = bar.add_task("Verifying audit chains", total=sum(lengths.values()))
            reports = [
                verify_chain(
                    conn,
                    chain,
                    external=external,
                    progress=lambda n: bar.advance(task, n),
                )
                for chain in chains
            ]
    intact = all(report.intact for report in reports)
    if as_json:
        print(json.dumps({"intact": intact, "chains": [r.as_json() for r in reports]}))
    else:
        _print_verification(reports)
    if not intact:
        raise typer.Exit(1)


def _print_verification(reports: list[ChainReport]) -> None:
    table = Table(title="Audit chains")
    for column in ("chain", "events", "head", "checkpoints", "queued", "oldest queued", "result"):
        table.add_column(column)
    for report in reports:
        oldest = report.oldest_queued_seconds
        table.add_row(
            report.tenant,
            str(report.events),
            str(report.head_seq),
            str(report.checkpoints),
            str(report.queued),
            "" if oldest is None else f"{oldest:.1f} s",
            "[green]intact[/]" if report.intact else f"[red]{len(report.problems)} problem(s)[/]",
        )
    console.print(table)
    for report in reports:
        for problem in sorted(report.problems, key=lambda p: p.seq):
            line = f"[red]{report.tenant} seq {problem.seq}[/] {problem.kind}: {problem.message}"
            if problem.expected or problem.found:
                line += f" (expected {problem.expected}, found {problem.found})"
            console.print(line)


@audit_app.command("checkpoint")
def audit_checkpoint(tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """Sign a checkpoint of every chain that moved since its last one; keep the output.

    What is queued is chained first, so the checkpoint covers every event committed so far."""
    settings = load_settings()
    with open_database(settings) as urls:
        _sequence(settings, urls)
        with psycopg.connect(libpq(urls.owner)) as conn:
            chains = None if tenant is None else _chains(conn, tenant)

        async def sign(owner: Database) -> list[Checkpoint]:
            checkpointer = Checkpointer(owner, open_kms(settings))
            if chains is None:
                return await checkpointer.sign_all()
            return [c for chain in chains for c in await checkpointer.sign_all(chain)]

        signed = asyncio.run(_with_owner(urls, sign))
    if as_json:
        for checkpoint in signed:
            print(json.dumps(checkpoint.as_json()))
    else:
        for checkpoint in signed:
            console.print(f"{checkpoint.tenant} at {checkpoint.seq}: {checkpoint.head_hash.hex()}")
        console.print(f"{len(signed)} checkpoint(s) signed")


@audit_app.command("export")
def audit_export(
    tenant: TenantOption = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only events at or after (ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Only events before (ISO 8601, UTC).")
    ] = None,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="Output format.")
    ] = ExportFormat.JSONL,
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Events as JSON lines, in chain order per chain, each with its hash, for a SIEM.

    What is queued is chained first, so the export holds every event committed so far."""
    if export_format is not ExportFormat.JSONL:  # pragma: no cover - one format today
        raise UsageError(f"unknown format {export_format}")
    bounds = {
        "since": since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        "until": until.replace(tzinfo=until.tzinfo or UTC) if until else None,
    }
    settings = load_settings()
    with (
        open_database(settings) as urls,
        psycopg.connect(libpq(urls.owner)) as conn,
        output.open("w") if output else nullcontext(sys.stdout) as sink,
    ):
        _sequence(settings, urls)
        for chain in _chains(conn, tenant):
            for event in export_events(conn, chain, **bounds):
                sink.write(json.dumps(event) + "\n")


@audit_app.command("sequence")
def audit_sequence(as_json: JsonOption = False) -> None:
    """Chain every queued event now.

    Running servers do it on their own, within RAMPARTS_AUDIT_MAX_LAG_SECONDS."""
    settings = load_settings()
    with open_database(settings) as urls:
        sequenced = _sequence(settings, urls)
    if as_json:
        print(json.dumps({"sequenced": sequenced}))
    else:
        console.print(f"{sequenced} event(s) chained")


@audit_app.command("status")
def audit_status(as_json: JsonOption = False) -> None:
    """Events waiting to be chained, and the oldest one's age; exit 1 beyond the lag bound.

    Per chain; the bound is RAMPARTS_AUDIT_MAX_LAG_SECONDS."""
    settings = load_settings()
    bound = settings.audit_max_lag_seconds
    with open_database(settings) as urls, psycopg.connect(libpq(urls.owner)) as conn:
        lags = queue_lag(conn)
    oldest = max((lag.oldest_seconds for lag in lags), default=None)
    within = oldest is None or oldest <= bound
    if as_json:
        status = {
            "queued": sum(lag.queued for lag in lags),
            "oldest_queued_seconds": oldest,
            "max_lag_seconds": bound,
            "within_bound": within,
            "chains": [
                {
                    "tenant": str(lag.tenant),
                    "queued": lag.queued,
                    "oldest_seconds": lag.oldest_seconds,
                }
                for lag in lags
            ],
        }
        print(json.dumps(status))
    else:
        for lag in lags:
            console.print(f"{lag.tenant}: {lag.queued} queued, oldest {lag.oldest_seconds:.1f} s")
        verdict = "[green]within[/]" if within else "[red]beyond[/]"
        age = "nothing queued" if oldest is None else f"oldest {oldest:.1f} s"
        console.print(f"{age}, {verdict} the {bound:g} s bound")
    if not within:
        raise typer.Exit(1)


policy_app = typer.Typer(
    help="Authorization policies (Cedar): validate, diff, snapshot.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

PolicyDirArgument = Annotated[
    Path, typer.Argument(help="A policy directory (its .cedar files, or its policies/).")
]


def _engine(directory: Path) -> PolicyEngine:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    try:
        return PolicyEngine.load(directory)
    except PolicyError as exc:
        raise PolicyInvalidError(f"{directory}: {exc}") from None


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[
        Path, typer.Argument(help="Policy directory; default: the shipped policies.")
    ] = POLICY_DIR,
    as_json: JsonOption = False,
) -> None:
    """Parse the policies and check them against the schema; exit 1 on any error."""
    _engine(directory)
    if as_json:
        print(json.dumps({"valid": True, "directory": str(directory)}))
    else:
        console.print(f"{directory}: valid")


@policy_app.command("diff")
def policy_diff(
    old: PolicyDirArgument, new: PolicyDirArgument, as_json: JsonOption = False
) -> None:
    """Every decision of the review matrix that changes from OLD to NEW."""
    found = changes(decide_all(_engine(old)), decide_all(_engine(new)))
    if as_json:
        print(json.dumps({"changes": [_change_json(c) for c in found]}))
        return
    _print_changes(found)


@policy_app.command("snapshot")
def policy_snapshot(
    check: Annotated[bool, typer.Option(help="Only compare; exit 1 when it differs.")] = False,
) -> None:
    """Write the reviewed decision snapshot for the shipped policies (or check it)."""
    current = decide_all(_engine(POLICY_DIR))
    found = changes(read_snapshot(), current)
    if check:
        _print_changes(found)
        if found:
            raise typer.Exit(1)
        return
    SNAPSHOT.write_text(snapshot_text(current))
    console.print(f"{SNAPSHOT}: {len(found)} decision(s) changed")


def _change_json(change: Change) -> dict[str, Any]:
    return {**change.cell.__dict__, "old": _word(change.old), "new": _word(change.new)}


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def _print_changes(found: list[Change]) -> None:
    if not found:
        console.print("no decision changes")
        return
    table = Table(title=f"{len(found)} decision(s) change")
    for column in ("role", "action", "tenant", "sensitivity", "mfa", "channel", "old", "new"):
        table.add_column(column)
    for change in found:
        cell = change.cell
        table.add_row(
            cell.role,
            cell.action,
            cell.relation,
            cell.sensitivity,
            cell.amr,
            cell.channel,
            _word(change.old),
            _word(change.new),
        )
    console.print(table)


secrets_app = typer.Typer(help="Secret scanning.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("scan")
def secrets_scan(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files to scan; default: the git checkout here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find credentials (keys, tokens, literal passwords, high-entropy strings); exit 1 on any.

    Findings name the file, line and kind, never the value. A line holding a deliberate fake
    says `pragma: allowlist secret`."""
    root = Path.cwd()
    files = [p.resolve() for p in paths] if paths else tracked_files(root)
    for path in files:
        if not path.exists():
            raise UsageError(f"no such file: {path}")
    leaks = list(scan_paths(files, root))
    if as_json:
        print(json.dumps({"leaks": [leak.__dict__ for leak in leaks], "files": len(files)}))
    else:
        for leak in leaks:
            console.print(str(leak), markup=False)
        console.print(f"{len(files)} file(s) scanned, {len(leaks)} finding(s)")
    if leaks:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: one line on stderr and a documented exit code for every known failure."""
    # SIGTERM unwinds like Ctrl-C, so the embedded database is stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    log_to_stderr()
    try:
        app()
    except (ConfigError, UsageError, OwnerRequiredError, ServeSizingError, ValueError) as exc:
        _fail(str(exc), 2)
    except (
        KmsError,
        KeyShreddedError,
        FieldDecryptionError,
        RowsLockedError,
        SequencerStalledError,
    ) as exc:
        _fail(str(exc), 1)
    except (ProductionGuardError, UnsafeRuntimeRoleError) as exc:
        _fail(str(exc), 3)
    except (
        MigrationError,
        PolicyInvalidError,
        SQLAlchemyError,
        psycopg.Error,
        FileNotFoundError,
    ) as exc:
        _fail(str(exc).strip().splitlines()[0], 1)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _fail(message: str, code: int) -> None:
    print(f"ramparts: error: {message}", file=sys.stderr)
    sys.exit(code)
