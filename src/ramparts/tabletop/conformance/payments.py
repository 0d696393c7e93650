"""Live checks of the payments controls."""

from __future__ import annotations
