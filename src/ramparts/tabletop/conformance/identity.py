"""Live checks of the identity controls."""

from __future__ import annotations
