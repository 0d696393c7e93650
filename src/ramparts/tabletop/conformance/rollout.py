"""Live checks of the rollout controls."""

from __future__ import annotations
