"""The `ramparts` command: the root of the command tree, and the exit code of every failure.

Exit codes: 0 success; 1 the operation failed (database unreachable, migration error);
2 bad usage or configuration; 3 refused to start (the production guard, or a runtime database
role with more power than it may have).
"""

from __future__ import annotations

import signal
import sys

import psycopg
import typer
from sqlalchemy.exc import SQLAlchemyError

from ramparts.apps import AppError
from ramparts.audit.sequencer import SequencerStalledError
from ramparts.backup.manifest import BackupRefusedError
from ramparts.backup.pgtools import BackupToolError
from ramparts.cli.apps import apps_app
from ramparts.cli.audit import audit_app
from ramparts.cli.backup import backup, drill, restore
from ramparts.cli.clients import clients_app
from ramparts.cli.common import UsageError
from ramparts.cli.demo import demo, seed_demo_command
from ramparts.cli.dlq import dlq_app
from ramparts.cli.drills import conformance, redteam, tabletop
from ramparts.cli.idp import idp_app
from ramparts.cli.keys import keys_app
from ramparts.cli.killswitch import killswitch
from ramparts.cli.ledger import ledger_app
from ramparts.cli.policy import PolicyInvalidError, policy_app
from ramparts.cli.psp_sandbox import sandbox_app
from ramparts.cli.reconcile import reconcile
from ramparts.cli.release import release_app
from ramparts.cli.secret_scan import secrets_app
from ramparts.cli.server import migrate, serve_command
from ramparts.cli.tenants import tenants_app
from ramparts.cli.webhook_secrets import webhook_secret_app
from ramparts.cli.worker import worker
from ramparts.config import ConfigError
from ramparts.crypto.fields import FieldDecryptionError
from ramparts.crypto.keys import KeyShreddedError
from ramparts.crypto.kms import KmsError
from ramparts.crypto.sealing import RowsLockedError, UndeclaredColumnsError
from ramparts.db.engine import OwnerRequiredError, UnsafeRuntimeRoleError
from ramparts.db.migrate import MigrationError
from ramparts.logs import log_to_stderr
from ramparts.payments.psp import PspError
from ramparts.payments.sandbox import SandboxError
from ramparts.policy.engine import PolicyError
from ramparts.release.manifest import ReleaseError
from ramparts.runtime import ProductionGuardError, ServeSizingError
from ramparts.tabletop.target import DrillError

__all__ = ["app", "main"]

app = typer.Typer(
    help="Ramparts: a secure-by-default runtime for AI-assisted business apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# The order here is the order of `ramparts --help`: commands first, then the groups.
app.command()(migrate)
app.command("seed-demo")(seed_demo_command)
app.command("serve")(serve_command)
app.command()(worker)
app.command()(demo)
app.command()(killswitch)
app.command()(reconcile)
app.command()(backup)
app.command()(restore)
app.command()(drill)
app.command()(tabletop)
app.command()(redteam)
app.command()(conformance)
app.add_typer(apps_app, name="apps")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(clients_app, name="clients")
app.add_typer(idp_app, name="idp")
app.add_typer(audit_app, name="audit")
app.add_typer(ledger_app, name="ledger")
app.add_typer(dlq_app, name="dlq")
app.add_typer(policy_app, name="policy")
app.add_typer(secrets_app, name="secrets")
app.add_typer(release_app, name="release")
psp_app = typer.Typer(help="The payment service provider (PSP).", no_args_is_help=True)
psp_app.add_typer(webhook_secret_app, name="webhook-secret")
psp_app.add_typer(sandbox_app, name="sandbox")
app.add_typer(psp_app, name="psp")


def main() -> None:
    """Entry point: one line on stderr and a documented exit code for every known failure."""
    # SIGTERM unwinds like Ctrl-C, so the embedded database is stopped on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    log_to_stderr()
    try:
        app()
    except (
        AppError,
        PolicyError,  # the selected apps' Cedar does not compose: their configuration
        ConfigError,
        UsageError,
        OwnerRequiredError,
        ServeSizingError,
        ValueError,
    ) as exc:
        _fail(str(exc), 2)
    except (
        KmsError,
        KeyShreddedError,
        FieldDecryptionError,
        RowsLockedError,
        UndeclaredColumnsError,
        SequencerStalledError,
        SandboxError,
        PspError,  # the PSP could not be read (its message names no key or card detail)
        BackupRefusedError,  # tampered, incomplete or foreign: nothing was restored
        BackupToolError,
        ReleaseError,
        DrillError,  # the drill could not be played (an instance that does not start)
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
