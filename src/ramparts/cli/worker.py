"""`ramparts worker`: runs the job queue's worker (PSP events, the periodic sweep, and on one
worker the daily reconciliation) until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from ramparts.config import ConfigError, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import open_database
from ramparts.logs import configure_logging
from ramparts.payments.jobs import run_worker
from ramparts.runtime import guard_production

__all__ = ["worker"]

MAX_CONCURRENCY = 64


def worker(
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=MAX_CONCURRENCY, help="Jobs run at the same time."),
    ] = 1,
    reconcile: Annotated[
        bool,
        typer.Option(
            "--reconcile",
            help="Also run the daily reconciliation (01:30 UTC), which needs the database "
            "owner's connection: give it to one worker only.",
        ),
    ] = False,
) -> None:
    """Run jobs (verified PSP events, the periodic sweep; with --reconcile, the daily
    reconciliation) until SIGINT or SIGTERM, as the runtime database role (the
    reconciliation as the owner). Failed jobs are retried with backoff, then dead-lettered
    (see `ramparts dlq`). Run as many as needed: they share the queue."""
    settings = load_settings()
    if settings.transaction_pooler:
        # New jobs are announced with NOTIFY to the worker's LISTEN, which lives on its own
        # server connection: a transaction pooler hands that connection to others.
        raise ConfigError(
            "RAMPARTS_DATABASE_POOLER: the worker needs a direct connection to PostgreSQL "
            "(LISTEN/NOTIFY); give it the server's RAMPARTS_APP_DATABASE_URL and no pooler"
        )
    configure_logging(settings)
    # procrastinate logs through the standard library: its warnings and errors (a failed
    # job's exception) to stderr, one line each.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    guard_production(settings)  # the prod profile's rules hold for workers too
    kms = open_kms(settings)
    with open_database(settings) as urls:
        # The owner's URL serves the daily reconciliation only (every tenant's books, the
        # owner-only report), and only on the worker asked to run it; every PSP event is
        # processed as the runtime role.
        owner = urls.owner if reconcile else None
        asyncio.run(run_worker(settings, urls.app, kms, concurrency=concurrency, owner_url=owner))
