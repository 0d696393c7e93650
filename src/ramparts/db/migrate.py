"""Roles and Alembic migrations, run as the owner (`ramparts migrate`).

The runtime's migrations (its db, audit and ai domains) are one chain, the branch labelled
`ramparts`. Each app brings its own as a `MigrationBranch`: an Alembic branch labelled with the
app's name whose first revision `depends_on` a runtime revision. An upgrade brings the runtime
and the selected apps' branches to their heads; the branches of apps that are installed but
not selected are known (a database may hold them) but not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError, to_tuple
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection

from ramparts.config import APP_ROLE
from ramparts.db.engine import DatabaseUrls, libpq

__all__ = [
    "RUNTIME_BRANCH",
    "ExpectedSchema",
    "MigrationBranch",
    "MigrationError",
    "current_revisions",
    "head_revisions",
    "upgrade",
]

_PACKAGE = Path(__file__).resolve().parent.parent
#: Each runtime domain keeps its own migrations beside its models; Alembic chains them.
RUNTIME_LOCATIONS = (
    _PACKAGE / "db" / "migrations" / "versions",
    _PACKAGE / "audit" / "migrations",
    _PACKAGE / "ai" / "migrations",
    _PACKAGE / "payments" / "migrations",
)
#: The label of the runtime's chain (on its first revision).
RUNTIME_BRANCH = "ramparts"
#: The runtime's first revision after apps got branches of their own. A database stamped
#: before it was migrated as one chain, which held the revisions that apps now bring.
BRANCHED_SINCE = "0019_role_format"
#: An app revision that ran in that single chain says, as module attributes, after which
#: runtime revision it ran there, and the relations (tables, views, indexes) it created: a
#: database stamped at a later runtime revision that has all of them ran it.
SINGLE_CHAIN_AFTER = "single_chain_after"
SINGLE_CHAIN_CREATED = "single_chain_created"


class MigrationError(Exception):
    """The database cannot be brought to the expected schema or roles."""


@dataclass(frozen=True)
class MigrationBranch:
    """An app's migrations: `folder` holds Alembic revisions, a branch labelled `name`."""

    name: str
    folder: Path


def _config(url: URL | None = None, branches: Iterable[MigrationBranch] = ()) -> Config:
    locations = [*RUNTIME_LOCATIONS, *(branch.folder for branch in branches)]
    config = Config()
    config.set_main_option("script_location", str(_PACKAGE / "db" / "migrations"))
    config.set_main_option("version_locations", " ".join(str(p) for p in locations))
    config.set_main_option("path_separator", "space")
    if url is not None:
        config.attributes["url"] = url
    return config


def _scripts(branches: Sequence[MigrationBranch]) -> ScriptDirectory:
    """The revisions of the runtime and `branches`, each branch checked to be what it says."""
    names = [branch.name for branch in branches]
    if RUNTIME_BRANCH in names:
        raise MigrationError(f"an app may not be called {RUNTIME_BRANCH!r}: the runtime's branch")
    if len(set(names)) != len(names):
        raise MigrationError("two apps bring migrations under one name")
    try:
        scripts = ScriptDirectory.from_config(_config(branches=branches))
        revisions = list(scripts.walk_revisions())
    except CommandError as exc:
        raise MigrationError(f"migrations cannot be read: {exc}") from None
    for branch in branches:
        folder = branch.folder.resolve()
        if not folder.is_dir():
            raise MigrationError(f"app {branch.name}: no migrations folder {folder}")
        for script in revisions:
            if Path(script.path).resolve().parent == folder:
                _check_branch_revision(branch, script)
    return scripts


def _check_branch_revision(branch: MigrationBranch, script: Script) -> None:
    where = f"app {branch.name}: revision {script.revision}"
    if branch.name not in script.branch_labels:
        raise MigrationError(
            f"{where} is not in its branch: the first revision takes "
            f"branch_labels = ({branch.name!r},), the others revise it"
        )
    if script.down_revision is None and not script.dependencies:
        raise MigrationError(
            f"{where} starts the branch without depends_on: it must name the runtime "
            "revision its tables build on"
        )


class ExpectedSchema:
    """The revisions a database migrated for the runtime and `branches` has: each one's head
    (`heads`), which readiness checks against what the database is stamped at."""

    def __init__(self, branches: Sequence[MigrationBranch] = ()) -> None:
        self._scripts = _scripts(branches)
        labels = [RUNTIME_BRANCH, *(branch.name for branch in branches)]
        self.heads = frozenset(_head(self._scripts, label) for label in labels)

    def missing(self, stamped: Iterable[str]) -> frozenset[str]:
        """The heads not yet applied to a database stamped at `stamped`. A head is applied
        when a stamped revision is it or comes after it: Alembic keeps one row per branch,
        and a branch rooted on the runtime's head takes over that row when it starts."""
        applied: set[str] = set()
        for revision in stamped:
            # A revision no installed app brings any more: it says nothing about the others.
            with suppress(CommandError):
                applied |= _ancestors(self._scripts, revision)
        return self.heads - applied


def head_revisions(branches: Sequence[MigrationBranch] = ()) -> frozenset[str]:
    """What a database migrated for the runtime and `branches` holds: each one's head."""
    return ExpectedSchema(branches).heads


def _head(scripts: ScriptDirectory, label: str) -> str:
    try:
        head = scripts.get_revision(f"{label}@head")
    except CommandError as exc:
        raise MigrationError(f"branch {label}: {exc}") from None
    if head is None:
        raise MigrationError(f"branch {label}: no migrations found")
    return head.revision


def current_revisions(url: URL) -> frozenset[str]:
    """The revisions the database is stamped at (one per branch head; empty: never migrated)."""
    engine = create_engine(url, poolclass=None)
    try:
        with engine.connect() as connection:
            return frozenset(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()


ROLE_POWERS = """
SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
       NOT r.rolcanlogin,
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
FROM pg_roles r WHERE r.rolname = %s
"""
POWER_NAMES = (
    "SUPERUSER",
    "BYPASSRLS",
    "CREATEROLE",
    "CREATEDB",
    "REPLICATION",
    "NOLOGIN",
    "membership in other roles",
    "ownership of objects",
)


def ensure_app_role(urls: DatabaseUrls) -> None:
    """Create the runtime login role, or refuse an existing one that has any power."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        row = conn.execute(ROLE_POWERS, (APP_ROLE,)).fetchone()
        if row is None:
            # DuplicateObject: created concurrently by another migrate on the same cluster.
            with suppress(psycopg.errors.DuplicateObject):
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                        "NOCREATEROLE NOINHERIT NOREPLICATION"
                    ).format(sql.Identifier(APP_ROLE))
                )
        else:
            powers = [name for name, has in zip(POWER_NAMES, row, strict=True) if has]
            if powers:
                raise MigrationError(
                    f"role {APP_ROLE} has {', '.join(powers)}; "
                    "the runtime role must have none of these"
                )
        if urls.app.password:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(urls.app.password)
                )
            )


def upgrade(
    urls: DatabaseUrls,
    selected: Sequence[MigrationBranch] = (),
    *,
    installed: Sequence[MigrationBranch] = (),
) -> tuple[frozenset[str], frozenset[str]]:
    """Bring the runtime and the `selected` branches to their heads; returns the revisions
    before and after. `installed` are the other apps' branches: not run, but a database that
    holds one of them must still be read."""
    ensure_app_role(urls)
    known = list({branch.name: branch for branch in [*installed, *selected]}.values())
    scripts = _scripts(known)
    before = current_revisions(urls.owner)
    _adopt_single_chain(urls.owner, scripts, before, known)
    config = _config(urls.owner, known)
    try:
        for label in [RUNTIME_BRANCH, *(branch.name for branch in selected)]:
            command.upgrade(config, f"{label}@head")
    except CommandError as exc:
        # The usual one: the database holds a revision no installed app brings any more.
        raise MigrationError(
            f"{exc}; is the app that brought it still installed (`ramparts apps list`)?"
        ) from None
    return before, current_revisions(urls.owner)


def _adopt_single_chain(
    url: URL,
    scripts: ScriptDirectory,
    stamped: frozenset[str],
    branches: Sequence[MigrationBranch],
) -> None:
    """A database migrated before apps had branches is stamped at one runtime revision, and
    holds what every revision before it in that single chain created, apps' ones too. Those
    revisions are stamped as the branches' revisions they are, without running them again.

    Two facts must agree before a revision is adopted: the single chain had passed it (the
    stamped revision comes after its `single_chain_after`), and what it created is there
    (`single_chain_created`). A database that stopped early under branches (a failed first
    migrate, say) is stamped the same way but lacks the relations: nothing is adopted, and
    the branch runs. Some of the relations without the others is refused, never guessed."""
    if len(stamped) != 1:
        return
    (revision,) = stamped
    if revision not in _ancestors(scripts, BRANCHED_SINCE):
        return  # migrated since, never migrated, or stamped at an app's own revision
    passed = _ancestors(scripts, revision) - {revision}
    engine = create_engine(url, poolclass=None)
    try:
        with engine.begin() as connection:
            for branch in branches:
                head = _adoptable(connection, scripts, branch, passed)
                if head is not None:
                    connection.execute(
                        text("INSERT INTO alembic_version (version_num) VALUES (:head)"),
                        {"head": head},
                    )
    finally:
        engine.dispose()


def _adoptable(
    connection: Connection, scripts: ScriptDirectory, branch: MigrationBranch, passed: set[str]
) -> str | None:
    """The newest revision of `branch` that the single chain ran, oldest first, or None."""
    last = None
    # Oldest first; the walk passes through the runtime revisions the branch depends on.
    walk = reversed(list(scripts.walk_revisions("base", f"{branch.name}@head")))
    for script in (each for each in walk if branch.name in each.branch_labels):
        created = tuple(getattr(script.module, SINGLE_CHAIN_CREATED, ()))
        if getattr(script.module, SINGLE_CHAIN_AFTER, None) not in passed or not created:
            break  # from here on, revisions the single chain never ran
        present = [
            name
            for name in created
            if connection.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None
        ]
        if not present:
            break  # passed, but never run here: the branch runs from this revision
        if len(present) < len(created):
            raise MigrationError(
                f"app {branch.name}: revision {script.revision} created "
                f"{', '.join(present)} but not {', '.join(sorted(set(created) - set(present)))}"
                "; restore the database from a backup, or stamp it by hand if you know better"
            )
        last = script.revision
    return last


def _ancestors(scripts: ScriptDirectory, revision: str) -> set[str]:
    """`revision` and every revision it revises or depends on, transitively."""
    found: set[str] = set()
    todo = [revision]
    while todo:
        current = todo.pop()
        if current in found:
            continue
        found.add(current)
        script = scripts.get_revision(current)
        if script is not None:
            todo.extend(to_tuple(script.down_revision, default=()))
            todo.extend(to_tuple(script.dependencies, default=()))
    return found
