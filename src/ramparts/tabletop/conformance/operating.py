"""The instance as its operator reaches it, with its settings (`Target.environment`): a
`ramparts` command (`drill`, `killswitch`), or a second `ramparts serve` of the same
installation, database and keys with a few settings changed, for what the instance's own
configuration cannot show (TLS on a demo that serves plain HTTP, a remote model in another
region, the prod profile's refusal to start). A second server is the instance's code and data
under another configuration, never a stand-in: each check says when it used one."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ramparts.tabletop.evidence import redacted
from ramparts.tabletop.target import DrillError, Target

__all__ = [
    "Stopped",
    "free_port",
    "operator_command",
    "operator_module",
    "redacted_tail",
    "second_server",
    "stopped_at_start",
]

#: How long a second server may take to import, compose its apps' Cedar and answer.
START_SECONDS = 120.0
#: How long an operator's command may take (a restore drill of a demo takes seconds).
COMMAND_SECONDS = 600.0
_RAMPARTS = (sys.executable, "-c", "from ramparts.cli import main; main()")
_COMMAND = (*_RAMPARTS, "serve")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(target: Target, settings: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment without its Ramparts settings, then the instance's, then
    `settings` (a None removes one). Its public URL stays the instance's: the tokens its
    people hold name it as their issuer and audience."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    environment |= target.environment
    environment["RAMPARTS_PUBLIC_URL"] = target.base_url
    for name, value in settings.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def operator_command(
    target: Target, *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`ramparts <arguments>` as the instance's operator runs it: with its settings, and
    `stdin` typed in (what a command takes there, such as a key, never on its arguments)."""
    return _as_operator(target, [*_RAMPARTS, *arguments], f"ramparts {arguments[0]}", stdin)


def operator_module(
    target: Target, module: str, *arguments: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <arguments>` (one of ours) with the operator's settings; what it
    must not show on a command line comes on `stdin`."""
    return _as_operator(target, [sys.executable, "-m", module, *arguments], module, stdin)


def _as_operator(
    target: Target, command: list[str], name: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    try:
        return subprocess.run(  # noqa: S603 - our own interpreter and command
            command,
            env=environment | target.environment,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DrillError(f"{name} took over {COMMAND_SECONDS:.0f} s") from None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _last_line(log: Path) -> str:
    return redacted(log.read_text(errors="replace"), last_line=True)


def redacted_tail(output: str) -> str:
    """The last line of a command's error output, as a report may carry it."""
    return redacted(output, last_line=True)


@contextmanager
def second_server(
    target: Target,
    settings: Mapping[str, str | None],
    *,
    arguments: Sequence[str] = (),
    ready: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """`ramparts serve` with `settings` changed and `arguments` added, until the block ends:
    its base URL (https when `ready`, the context its readiness is checked with)."""
    port = free_port()
    scheme = "https" if ready is not None else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ramparts-second-") as scratch:
        log = Path(scratch) / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
                [*_COMMAND, "--port", str(port), *arguments],
                # No sandbox PSP of its own: it must not start one beside the instance's.
                env=_environment(target, {"RAMPARTS_PSP": "stripe", **settings}),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_ready(process, base, log, ready)
            yield base
        finally:
            _stop(process)


def _wait_ready(
    process: subprocess.Popen[bytes], base: str, log: Path, context: ssl.SSLContext | None
) -> None:
    deadline = time.monotonic() + START_SECONDS
    with httpx.Client(base_url=base, timeout=5, verify=context or True) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DrillError(f"the second server stopped while starting: {_last_line(log)}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise DrillError(f"the second server did not answer within {START_SECONDS:.0f} s")


@dataclass(frozen=True)
class Stopped:
    """How a `serve` that should not start ended: its exit status, its error output, and
    whether its port ever answered while it ran."""

    code: int | None
    stderr: str
    served: bool


def stopped_at_start(
    target: Target, settings: Mapping[str, str | None], *, seconds: float = START_SECONDS
) -> Stopped:
    """`ramparts serve` with `settings`, expected to refuse to start: its port is watched
    until it exits (a server still running after `seconds` is stopped, code None)."""
    port = free_port()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and command
            [*_COMMAND, "--port", str(port)],
            env=_environment(target, settings),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        served = False
        deadline = time.monotonic() + seconds
        while process.poll() is None and time.monotonic() < deadline:
            served = served or _answers(port)
            time.sleep(0.1)
        code = process.poll()
        _stop(process)
        stderr.seek(0)
        return Stopped(code, stderr.read().decode(errors="replace"), served)
