"""Data loss prevention: the kinds of personal data a tenant never lets reach a model, not even
masked (masking would otherwise let them through as placeholders)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.detectors import Kind

__all__ = ["forbidden_kinds"]


async def forbidden_kinds(session: AsyncSession) -> frozenset[Kind]:
    """The session's tenant's DLP rules: kinds never sent to a model, not even masked."""
    rows = await session.scalars(
        text(
            "SELECT kind FROM ai_dlp_rules WHERE tenant_id = current_setting('app.tenant_id')::uuid"
        )
    )
    return frozenset(Kind(kind) for kind in rows)
