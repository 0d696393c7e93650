"""Whom a check signs in as, chosen from the demo credentials without naming any app's roles.

Checks that change a person's state (lock their second factor, revoke a sign-in, swap their
sealed secret for a moment) use a *spare* person: one whose roles someone listed before them
in the same tenant also holds (the seeds' "second person" of a role, such as another team's
colleague). Those checks put the state back afterwards, so a spare person shared by two checks
costs at most a wait for the next TOTP step.
"""

from __future__ import annotations

from ramparts.identity.models import ADMIN_ROLE
from ramparts.tabletop.target import DrillError, Target

__all__ = ["admin_of", "first_of_each_role_set", "other_tenant", "spare_people", "tenant_id"]


def _people(target: Target, tenant: str) -> list[tuple[str, frozenset[str]]]:
    return [
        (str(u["username"]), frozenset(u.get("roles", ())))
        for u in target.report.get("users", [])
        if u.get("tenant") == tenant
    ]


def tenant_id(target: Target, tenant: str) -> str:
    return str(target.tenant(tenant)["id"])


def other_tenant(target: Target, tenant: str) -> str:
    """A second tenant of the instance (a check of isolation needs two)."""
    others = [slug for slug in target.tenants() if slug != tenant]
    if not others:
        raise DrillError("the demo credentials name a single tenant: isolation needs two")
    return others[0]


def admin_of(target: Target, tenant: str) -> str:
    """The tenant's administrator: who reads its audit trail."""
    for username, roles in _people(target, tenant):
        if ADMIN_ROLE in roles:
            return username
    raise DrillError(f"the demo credentials have no {ADMIN_ROLE} in tenant {tenant!r}")


def first_of_each_role_set(target: Target, tenant: str) -> list[tuple[str, frozenset[str]]]:
    """One person per distinct set of roles in the tenant (the first listed)."""
    seen: dict[frozenset[str], str] = {}
    for username, roles in _people(target, tenant):
        seen.setdefault(roles, username)
    return [(username, roles) for roles, username in seen.items()]


def spare_people(target: Target, tenant: str) -> list[str]:
    """The tenant's spare people, last listed first: no administrator, and every role of
    theirs held by someone listed before them."""
    held: set[str] = set()
    spare = []
    for username, roles in _people(target, tenant):
        if roles and roles <= held and ADMIN_ROLE not in roles:
            spare.append(username)
        held |= roles
    if not spare:
        raise DrillError(f"tenant {tenant!r} has no spare person for a check to use")
    return spare[::-1]
