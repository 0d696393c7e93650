"""The roles the expenses app's people hold (the runtime knows only `admin`)."""

from __future__ import annotations

__all__ = ["APPROVER", "EMPLOYEE", "FINANCE", "READS_EVERY_EXPENSE", "ROLES"]

EMPLOYEE = "employee"  # claims their own expenses
APPROVER = "approver"  # approves other people's claims
FINANCE = "finance"  # reimburses approved claims: the app's money role
ROLES = (EMPLOYEE, APPROVER, FINANCE)
#: Roles whose permits in policy/policies/10-roles.cedar read every claim of their tenant.
READS_EVERY_EXPENSE = frozenset({APPROVER, FINANCE, "admin"})
