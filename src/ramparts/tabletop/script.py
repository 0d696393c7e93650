"""Playing the compromised model: the drill writes, before each message, the turns the
instance's scripted model (`RAMPARTS_MODEL=scripted:<file>`) replays for it, and reads back
what that model was shown (`<file>.seen.jsonl`, one line per model call).

The scripted model reads its file again whenever the content changes and replays it from the
first turn, so each message gets exactly the turns written for it, whichever worker serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ScriptControl", "Seen", "seen_path"]


def seen_path(script: Path) -> Path:
    """Where a scripted model replaying `script` writes what it is shown."""
    return script.with_name(script.name + ".seen.jsonl")


@dataclass(frozen=True)
class Seen:
    """One model call as the model got it: the tools on offer and the messages."""

    tools: tuple[str, ...]
    messages: tuple[dict[str, Any], ...]

    def text(self) -> str:
        """Everything the model was shown, as one string (for looking for planted values)."""
        return "\n".join(str(m.get("content") or "") for m in self.messages) + "\n".join(
            json.dumps(m.get("tool_calls", []), sort_keys=True) for m in self.messages
        )


class ScriptControl:
    """The script file of an instance's scripted model, and what it saw."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest: str | None = None
        # Where the witness ended when the last script was written: its calls come after, so
        # a long drill reads what one message caused, not the whole file again each time.
        self._offset = 0

    def play(self, turns: list[dict[str, Any]]) -> None:
        """The turns the next message's model calls replay. A closing text turn carrying a
        fresh nonce makes every script differ from the last one, so the model starts over
        even when two messages play the same attack."""
        script = [*turns, {"text": f"(turns end {secrets.token_hex(8)})"}]
        data = json.dumps(script).encode()
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        temporary.write_bytes(data)
        try:
            self._offset = seen_path(self.path).stat().st_size
        except FileNotFoundError:
            self._offset = 0
        os.replace(temporary, self.path)  # whole or not at all: the model never reads half
        self._digest = hashlib.sha256(data).hexdigest()

    def seen(self) -> list[Seen]:
        """The model calls that replayed the last script `play` wrote."""
        path = seen_path(self.path)
        try:
            with path.open("rb") as witness:
                if witness.seek(0, os.SEEK_END) < self._offset:
                    self._offset = 0  # a new witness file: all of it is new
                witness.seek(self._offset)
                lines = witness.read().decode("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        calls = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            if record.get("script") == self._digest:
                calls.append(
                    Seen(tuple(record.get("tools", ())), tuple(record.get("messages", ())))
                )
        return calls
