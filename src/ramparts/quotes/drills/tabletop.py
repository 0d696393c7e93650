"""The checklist's tabletop scenario, played on the quote app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

play: Callable[..., Any] | None = None
