"""Live checks of the ai controls."""

from __future__ import annotations
