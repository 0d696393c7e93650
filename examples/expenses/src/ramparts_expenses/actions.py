"""The expenses app's Cedar actions (namespace `Expenses`, schema in policy/)."""

from __future__ import annotations

from ramparts.policy.engine import PolicyAction

__all__ = ["NAMESPACE", "ExpenseAction"]

NAMESPACE = "Expenses"


class ExpenseAction:
    """Every action a route or a tool of the app asks for; each applies to an `Expense`."""

    EXPENSE_LIST = PolicyAction("expense.list", "Expense", NAMESPACE)
    EXPENSE_READ = PolicyAction("expense.read", "Expense", NAMESPACE)
    EXPENSE_SUBMIT = PolicyAction("expense.submit", "Expense", NAMESPACE)
    EXPENSE_APPROVE = PolicyAction("expense.approve", "Expense", NAMESPACE)
    #: Moves money: only Finance, never on the model's word alone (the runtime's money walls).
    EXPENSE_REIMBURSE = PolicyAction("expense.reimburse", "Expense", NAMESPACE)
    ALL = (EXPENSE_LIST, EXPENSE_READ, EXPENSE_SUBMIT, EXPENSE_APPROVE, EXPENSE_REIMBURSE)
    MONEY = (EXPENSE_REIMBURSE,)
