"""The tenant's directory for its admins: each user, their roles and how they sign in.

What it tells is status only: whether a TOTP secret is enrolled, each passkey's name and
dates, whether the account is active or locked, and when the user last signed in (the newest
sign-in that started a token family). It never reads a password hash, a sealed TOTP secret, a
passkey's public key or a recovery code: those columns are not selected.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["list_users"]

_USERS = text(
    "SELECT u.id, u.username, u.display_name, u.is_active, u.created_at, "
    "greatest(u.locked_until, u.second_factor_locked_until) AS locked_until, "
    "greatest(u.locked_until, u.second_factor_locked_until) > now() AS locked, "
    "array(SELECT m.role FROM memberships m WHERE m.tenant_id = u.tenant_id "
    "AND m.user_id = u.id ORDER BY m.role) AS roles, "
    "EXISTS (SELECT 1 FROM totp_credentials t WHERE t.tenant_id = u.tenant_id "
    "AND t.user_id = u.id) AS totp, "
    "(SELECT max(f.auth_time) FROM refresh_families f WHERE f.tenant_id = u.tenant_id "
    "AND f.user_id = u.id) AS last_sign_in "
    "FROM users u WHERE u.tenant_id = :tenant ORDER BY u.username"
)
_PASSKEYS = text(
    "SELECT user_id, name, created_at, last_used_at FROM webauthn_credentials "
    "WHERE tenant_id = :tenant ORDER BY created_at"
)


async def list_users(session: AsyncSession, tenant: uuid.UUID) -> list[dict[str, Any]]:
    """Every user of `tenant` (in a tenant session: row-level security holds it to one),
    as JSON-ready objects, by username."""
    passkeys: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for row in (await session.execute(_PASSKEYS, {"tenant": tenant})).mappings():
        passkeys[row["user_id"]].append(
            {
                "name": row["name"],
                "created_at": row["created_at"].isoformat(),
                "last_used_at": _iso(row["last_used_at"]),
            }
        )
    users = []
    for row in (await session.execute(_USERS, {"tenant": tenant})).mappings():
        keys = passkeys.get(row["id"], [])
        users.append(
            {
                "id": str(row["id"]),
                "username": row["username"],
                "display_name": row["display_name"],
                "roles": list(row["roles"]),
                "active": row["is_active"],
                "locked": bool(row["locked"]),
                "locked_until": _iso(row["locked_until"]) if row["locked"] else None,
                "created_at": row["created_at"].isoformat(),
                "last_sign_in": _iso(row["last_sign_in"]),
                "mfa": {"totp": row["totp"], "passkeys": keys},
            }
        )
    return users


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())
