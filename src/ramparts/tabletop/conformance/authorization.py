"""Live checks of the authorization controls."""

from __future__ import annotations
