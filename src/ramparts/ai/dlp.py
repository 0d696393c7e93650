"""Data loss prevention: the kinds of personal data a tenant never lets reach a model, not even
masked (masking would otherwise let them through as placeholders)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.detectors import Kind

__all__ = ["forbidden_kinds", "set_forbidden_kinds"]


async def forbidden_kinds(session: AsyncSession) -> frozenset[Kind]:
    """The session's tenant's DLP rules: kinds never sent to a model, not even masked."""
    rows = await session.scalars(
        text(
            "SELECT kind FROM ai_dlp_rules WHERE tenant_id = current_setting('app.tenant_id')::uuid"
        )
    )
    return frozenset(Kind(kind) for kind in rows)


async def set_forbidden_kinds(
    session: AsyncSession, audit: AuditLog, actor: Actor, kinds: Iterable[Kind]
) -> None:
    """Replace the session's tenant's DLP rules with `kinds`, and audit it, in the session's
    transaction: the one write path of the rules."""
    chosen = sorted(set(kinds))
    await session.execute(
        text("DELETE FROM ai_dlp_rules WHERE tenant_id = current_setting('app.tenant_id')::uuid")
    )
    for kind in chosen:
        await session.execute(
            text(
                "INSERT INTO ai_dlp_rules (tenant_id, kind) "
                "VALUES (current_setting('app.tenant_id')::uuid, :kind)"
            ),
            {"kind": kind.value},
        )
    await audit.record(
        session,
        actor,
        Action.DLP_RULES_SET,
        Resource("assistant", "dlp"),
        Decision.ALLOW,
        {"forbidden": [k.value for k in chosen]},
    )
