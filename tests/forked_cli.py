"""Run the `ramparts` command many times, each in a process of its own, from one warm import.

Importing the command costs seconds (the whole runtime: FastAPI, SQLAlchemy, Cedar, jsonschema's
format checkers), so a test that starts `ramparts serve` once per configuration would spend
nearly all its time importing. This helper imports `ramparts.cli` once, then forks a child per
run: a separate process, with its own environment and arguments, that calls
`ramparts.cli:main` (what the `ramparts` console script calls) and exits with its status.

    python -m tests.forked_cli < runs.json

stdin: a JSON list of `{"args": [...], "env": {...}}`; stdout: a JSON list of
`{"code", "stdout", "stderr", "seconds"}` in the same order (`code` is null when the run had to
be killed after `TIMEOUT_SECONDS`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ramparts.cli import main as ramparts_main

TIMEOUT_SECONDS = 60


def _child(args: list[str], env: dict[str, str], out: Path, err: Path) -> None:
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["ramparts", *args]
    code = 0
    try:
        ramparts_main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def run(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out, err = Path(scratch) / "stdout", Path(scratch) / "stderr"
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(args, env, out, err)
        code: int | None = None
        while time.monotonic() - began < TIMEOUT_SECONDS:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return {
            "code": code,
            "stdout": out.read_text() if out.exists() else "",
            "stderr": err.read_text() if err.exists() else "",
            "seconds": round(time.monotonic() - began, 3),
        }


def main() -> None:
    runs = json.load(sys.stdin)
    results = [run(item["args"], item["env"]) for item in runs]
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
