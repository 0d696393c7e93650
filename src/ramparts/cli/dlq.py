"""`ramparts dlq list|replay`: the jobs that failed on every attempt (the dead-letter queue),
and putting them back in the queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.table import Table

from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.config import load_settings
from ramparts.db.engine import open_database
from ramparts.payments.dead_letters import (
    DeadLetter,
    NotDeadLetteredError,
    dead_letters,
    replay,
)
from ramparts.payments.jobs import opened_jobs

__all__ = ["dlq_app"]

dlq_app = typer.Typer(
    help="The dead-letter queue: jobs that failed on every attempt.", no_args_is_help=True
)


def _with_jobs(ids: Sequence[int] | None, *, replaying: bool) -> list[DeadLetter]:
    settings = load_settings()

    async def work() -> list[DeadLetter]:
        async with opened_jobs(urls.app, max_connections=1) as app:
            if replaying:
                return await replay(app, ids)
            return await dead_letters(app)

    with open_database(settings) as urls:
        try:
            return asyncio.run(work())
        except NotDeadLetteredError as exc:
            raise UsageError(str(exc)) from None


@dlq_app.command("list")
def dlq_list(as_json: JsonOption = False) -> None:
    """The dead-lettered jobs, oldest first: id, task, PSP event, attempts, the last error's
    class and when it failed."""
    letters = _with_jobs(None, replaying=False)
    if as_json:
        print(json.dumps({"dead_letters": [letter.as_json() for letter in letters]}))
        return
    table = Table(title="Dead letters")
    for column in ("job", "task", "event", "attempts", "error", "failed at"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.job_id),
            letter.task,
            letter.event_id or "",
            str(letter.attempts),
            letter.error or "",
            letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "",
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    job_ids: Annotated[
        list[int] | None, typer.Argument(help="Dead-lettered job ids.", show_default=False)
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Every dead-lettered job.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Put dead-lettered jobs back in the queue for one more run each (a job whose event was
    processed meanwhile does nothing). Every id must be a dead letter, else none is replayed."""
    if replay_all == bool(job_ids):
        raise UsageError("name the jobs to replay, or --all (not both)")
    replayed = _with_jobs(None if replay_all else job_ids, replaying=True)
    if as_json:
        print(json.dumps({"replayed": [letter.job_id for letter in replayed]}))
        return
    console.print(f"{len(replayed)} job(s) back in the queue")
