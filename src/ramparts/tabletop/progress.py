"""How a drill tells the command line how far it is (a progress bar there; nothing in tests)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "Silent"]


class Progress(Protocol):
    def start(self, total: int, label: str) -> None:
        """`total` steps follow, under `label`."""

    def advance(self, label: str) -> None:
        """One step is done; `label` names the next (or the one done)."""


class Silent:
    def start(self, total: int, label: str) -> None:
        return None

    def advance(self, label: str) -> None:
        return None
