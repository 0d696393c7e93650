"""The instance a drill plays against: its own, fresh one (the default) or one already running.

Its own instance is a fresh `ramparts demo` in a private temporary home: the embedded
PostgreSQL (or a fresh database on a server the caller names, dropped afterwards), every
installed app, the sandbox PSP and the job worker, and a scripted model whose turns the drill
writes. It is what a reviewer gets from a fresh install, and nothing of it outlives the drill.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import URL, make_url

from ramparts.apps import installed_apps
from ramparts.config import KmsBackend, Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.keystore import LocalKms, default_key_file
from ramparts.db.embedded import embedded_postgres
from ramparts.db.engine import DatabaseUrls, derive_app_url, libpq, open_database
from ramparts.tabletop.evidence import redacted, without_credentials
from ramparts.tabletop.script import ScriptControl
from ramparts.tabletop.target import DrillError, Operator, Target, read_credentials

__all__ = ["STARTUP_SECONDS", "instance_environment", "own_instance", "running_instance"]

#: How long a fresh instance may take to migrate, seed and answer (the embedded database's
#: first start initializes a cluster).
STARTUP_SECONDS = 180.0
_CREDENTIALS = "demo-credentials.json"
_DRIVER = "postgresql+psycopg"
#: The line `ramparts demo` prints, whole, with its sandbox PSP's address.
_SANDBOX_LINE = re.compile(r"^Sandbox PSP \(localstripe\) at (https?://\S+)$", re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def own_instance(
    *,
    database_server: str | None = None,
    apps: tuple[str, ...] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Target]:
    """A fresh demo instance for one drill, stopped and removed afterwards.

    `database_server`: a PostgreSQL server's URL (its maintenance database) on which a fresh
    database is made and dropped afterwards; None: the embedded server. `apps`: what it
    serves (default: every installed app). `env`: more environment for its process."""
    served = apps or tuple(sorted(installed_apps()))
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ramparts-drill-")))
        os.chmod(home, 0o700)
        script = home / "model.json"
        script.write_text("[]")
        port = _free_port()
        child = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
        child.update(
            {
                "RAMPARTS_PROFILE": "dev",
                "RAMPARTS_HOME": str(home / "home"),
                # The local KMS's key file stays in the drill's home, not the user's ~/.config.
                "XDG_CONFIG_HOME": str(home / "config"),
                "RAMPARTS_MODEL": f"scripted:{script}",
                "RAMPARTS_APPS": ",".join(served),
            }
        )
        urls: DatabaseUrls | None = None
        if database_server is not None:
            owner = stack.enter_context(_fresh_database(database_server))
            child["RAMPARTS_DATABASE_URL"] = owner.render_as_string(hide_password=False)
            urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
        child.update(env or {})
        log = home / "instance.log"
        process = stack.enter_context(_demo_process(child, port, log))
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(process, base_url, log)
        report = read_credentials(home / "home" / _CREDENTIALS)
        operator = _own_operator(child, home, log)
        if urls is None:  # join the embedded server the instance runs
            owner = stack.enter_context(embedded_postgres(home / "home")).set(drivername=_DRIVER)
            urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
        target = Target(
            base_url=base_url,
            report=report,
            urls=urls,
            script=ScriptControl(script),
            operator=operator,
            home=home / "home",
            environment=instance_environment(child),
            description={
                "instance": "its own: a fresh `ramparts demo`",
                "url": base_url,
                "database": "a fresh database on " + _where(database_server)
                if database_server
                else "embedded PostgreSQL (pgserver)",
                "apps": ", ".join(served),
                "model": "scripted (the drill plays a compromised model)",
                "profile": "dev",
                "operator": "the drill (the instance's keystore, its sandbox PSP)",
            },
        )
        stack.callback(target.close)
        yield target


@contextmanager
def running_instance(
    url: str,
    *,
    credentials: Path | None = None,
    script: Path | None = None,
    database_url: str | None = None,
) -> Iterator[Target]:
    """An instance already running at `url`, with its demo credentials (default: those of
    RAMPARTS_HOME), the script file of its scripted model when it runs one, and its
    database (`database_url`, else RAMPARTS_HOME's embedded one when it has one)."""
    settings = load_settings()
    report = read_credentials(credentials or settings.home / _CREDENTIALS)
    _require_ready(url)
    with ExitStack() as stack:
        urls: DatabaseUrls | None = None
        if database_url is not None:
            owner = make_url(database_url).set(drivername=_DRIVER)
            urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
        elif not settings.embedded_database or (settings.home / "pgdata").is_dir():
            urls = stack.enter_context(open_database(settings))
        operator = _shell_operator(settings)
        environment = instance_environment(os.environ)
        if database_url is not None:
            environment["RAMPARTS_DATABASE_URL"] = database_url
        target = Target(
            base_url=url.rstrip("/"),
            report=report,
            urls=urls,
            script=ScriptControl(script) if script is not None else None,
            operator=operator,
            home=settings.home,
            environment=environment,
            description={
                "instance": "running",
                "url": without_credentials(url),
                "database": "reachable" if urls is not None else "not reachable",
                "model": "scripted (the drill plays a compromised model)"
                if script is not None
                else "its own (no compromised model can be played)",
                "operator": "this shell's settings (its home's KMS)"
                if operator is not None
                else "not reachable (no KMS here)",
            },
        )
        stack.callback(target.close)
        yield target


def _own_operator(env: dict[str, str], home: Path, log: Path) -> Operator:
    """The operator of an instance of our own: its environment, its private keystore (the
    key file in the drill's config home, as its process finds it) and its sandbox PSP, at
    the address the demo printed."""
    found = _SANDBOX_LINE.search(log.read_text(errors="replace"))
    api_base = found.group(1) if found else None
    instance_home = Path(env["RAMPARTS_HOME"])
    kms = LocalKms(
        instance_home / "keys" / "keystore.json",
        key_file=default_key_file(instance_home, config_home=home / "config"),
        create_key_file=False,
    )
    return Operator(
        env={**env, **({"RAMPARTS_PSP_API_BASE": api_base} if api_base else {})},
        kms=kms,
        psp_api_base=api_base,
    )


def _shell_operator(settings: Settings) -> Operator | None:
    """The operator of a running instance, when this shell's settings reach a KMS: Vault, or
    a local keystore that exists in RAMPARTS_HOME (none is made here)."""
    local = settings.kms_backend is KmsBackend.LOCAL
    if local and not (settings.home / "keys" / "keystore.json").is_file():
        return None
    return Operator(
        env=dict(os.environ), kms=open_kms(settings), psp_api_base=settings.psp_api_base
    )


def _require_ready(url: str) -> None:
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            status = client.get("/readyz").status_code
    except httpx.HTTPError as exc:
        raise DrillError(f"the instance at {url} cannot be reached: {exc}") from None
    if status != 200:
        raise DrillError(f"the instance at {url} is not ready (/readyz answered {status})")


def instance_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """What of `environment` configures a Ramparts process: its settings (`RAMPARTS_*`, not
    the reserved `RAMPARTS_TEST_*`) and XDG_CONFIG_HOME (where the local KMS's key file is)."""
    known = {f"RAMPARTS_{name.upper()}" for name in Settings.model_fields}
    return {
        name: value
        for name, value in environment.items()
        if name in known or name == "XDG_CONFIG_HOME"
    }


def _where(server: str) -> str:
    url = make_url(server)
    return f"{url.host or 'localhost'}:{url.port or 5432}"


@contextmanager
def _fresh_database(server: str) -> Iterator[URL]:
    base = make_url(server).set(drivername=_DRIVER)
    name = f"ramparts_drill_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(libpq(base), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        raise DrillError(f"cannot create a database on {_where(server)}: {exc}") from None
    try:
        yield base.set(database=name)
    finally:
        with psycopg.connect(libpq(base), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def _demo_process(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable,
        "-c",
        "from ramparts.cli import main; main()",
        "demo",
        "--port",
        str(port),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)  # the demo stops its server, worker and PSP
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(base_url=base_url, timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = redacted(log.read_text(errors="replace"), last_line=True)
                raise DrillError(f"the instance stopped while starting: {tail}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise DrillError(f"the instance did not answer within {STARTUP_SECONDS:.0f} s (log: {log})")
