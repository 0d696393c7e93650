"""Where the red team's attacks land in the quote app."""

from __future__ import annotations

from typing import Any

SURFACE: Any = None
