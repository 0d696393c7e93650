"""Live checks of the platform controls."""

from __future__ import annotations
