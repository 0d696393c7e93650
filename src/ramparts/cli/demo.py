"""`ramparts seed-demo` and `ramparts demo`: the demo data and its credentials (dev profile
only)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TextIO

from ramparts.apps import selected_apps
from ramparts.cli.common import JsonOption, UsageError, audit_log, console, with_owner
from ramparts.cli.server import HostOption, PortOption, migrate_database
from ramparts.config import Profile, PspBackend, Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls, open_database
from ramparts.demo import seed_demo
from ramparts.payments.jobs import WorkerThread
from ramparts.payments.sandbox_service import sandbox_psp
from ramparts.runtime import serve

__all__ = ["DEMO_CREDENTIALS", "demo", "seed_demo_command"]

#: Where `seed-demo` and `demo` leave the demo credentials, readable by their owner only.
DEMO_CREDENTIALS = "demo-credentials.json"


def _require_dev(settings: Settings, command: str) -> None:
    if settings.profile is not Profile.DEV:
        raise UsageError(
            f"{command} runs only under the dev profile (RAMPARTS_PROFILE={settings.profile})"
        )


def _seed(settings: Settings, urls: DatabaseUrls) -> dict[str, Any]:
    kms = open_kms(settings)

    async def seed(owner: Database) -> dict[str, Any]:
        return await seed_demo(
            owner,
            kms,
            audit_log(settings, owner, kms),
            public_url=settings.public_url,
            apps=selected_apps(settings.apps),
        )

    # Opened first: if the credentials cannot be kept, nothing is reset.
    with _credentials_file(settings) as file:
        report = asyncio.run(with_owner(urls, seed))
        file.truncate(0)  # only now: until the seed succeeds, the old credentials still hold
        json.dump(report, file, indent=2)
        file.write("\n")
    return report


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


@contextmanager
def _beside_demo(settings: Settings, *, urls: DatabaseUrls) -> Iterator[Settings]:
    """What runs beside the demo's server once its checks passed: the sandbox PSP
    (`sandbox_psp`, saying where it listens), then the job worker (PSP events) on a thread of
    this process, which shares the sandbox's address and the embedded database the server
    uses, and stops with it."""
    with sandbox_psp(settings) as running:
        if running.psp is PspBackend.SANDBOX and running.psp_api_base is not None:
            # Plain print, like the credentials: the address whole on its line.
            print(f"Sandbox PSP (localstripe) at {running.psp_api_base}", flush=True)
            print(f"  delivering signed events to {running.public_url}/webhooks/psp", flush=True)
        worker = WorkerThread(running, urls.app, open_kms(running), owner_url=urls.owner).start()
        try:
            yield running
        finally:
            worker.stop()


def seed_demo_command(as_json: JsonOption = False) -> None:
    """Create the demo tenants and users, and the served apps' demo data, printing fresh
    passwords (dev only)."""
    settings = load_settings()
    _require_dev(settings, "seed-demo")
    with open_database(settings) as urls:
        report = _seed(settings, urls)
    if as_json:
        print(json.dumps(report))
    else:
        _print_credentials(settings, report)


def demo(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """Start the database, migrate, seed the demo data and serve it with a job worker: one
    command."""
    settings = load_settings()
    _require_dev(settings, "demo")
    if "public_url" not in settings.model_fields_set:
        # The demo is reached where it listens; issuer and redirect URIs must say the same.
        settings = settings.model_copy(update={"public_url": f"http://{host}:{port}"})
    where = "embedded PostgreSQL" if settings.embedded_database else "RAMPARTS_DATABASE_URL"
    with open_database(settings) as urls:
        with console.status(f"Migrating and seeding {where}…"):
            migrate_database(settings, urls)
            report = _seed(settings, urls)
        _print_credentials(settings, report)
        console.print(f"Serving on [bold]http://{host}:{port}[/] — Ctrl-C to stop.")
        serve(settings, urls, host=host, port=port, beside=partial(_beside_demo, urls=urls))
