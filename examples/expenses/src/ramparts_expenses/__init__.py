"""Expenses on Ramparts: employees claim, approvers approve, Finance reimburses."""
