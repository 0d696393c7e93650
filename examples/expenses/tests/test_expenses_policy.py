"""The app's Cedar, composed with the runtime's: who may do what with a claim, the walls no
permit opens (tenants, one's own claim, money from the assistant), and the reviewed snapshot."""

from __future__ import annotations

import pytest
from ramparts.apps import policy_engine, policy_fragment
from ramparts.policy.engine import Channel, PolicyAction, PolicyEngine, Subject, Target
from ramparts.policy.matrix import app_scope, decide_all, read_snapshot

from ramparts_expenses.actions import ExpenseAction
from ramparts_expenses.app import EXPENSES
from ramparts_expenses.roles import APPROVER, EMPLOYEE, FINANCE

ME, SOMEONE = "user-me", "user-someone"
A = ExpenseAction


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return policy_engine([EXPENSES])


def allowed(
    engine: PolicyEngine,
    roles: tuple[str, ...],
    action: PolicyAction,
    *,
    employee: str | None = SOMEONE,
    tenant: str = "t1",
    channel: Channel = Channel.API,
) -> bool:
    subject = Subject(ME, "t1", "eu", frozenset(roles), frozenset({"pwd", "otp"}))
    parties = () if employee is None else (("employee", employee),)
    target = Target(action.entity_type, "e1", tenant, "internal", parties=parties)
    return engine.decide(subject, action, target, channel).allowed


def test_employees_see_and_claim_their_own_and_nothing_else(engine: PolicyEngine) -> None:
    mine = {"employee": ME}
    assert allowed(engine, (EMPLOYEE,), A.EXPENSE_READ, **mine)
    assert allowed(engine, (EMPLOYEE,), A.EXPENSE_SUBMIT, **mine)
    assert not allowed(engine, (EMPLOYEE,), A.EXPENSE_READ)  # a colleague's
    assert not allowed(engine, (EMPLOYEE,), A.EXPENSE_SUBMIT)  # in a colleague's name
    assert not allowed(engine, (EMPLOYEE,), A.EXPENSE_READ, employee=None)  # nobody's
    for action in (A.EXPENSE_APPROVE, A.EXPENSE_REIMBURSE):
        assert not allowed(engine, (EMPLOYEE,), action)
        assert not allowed(engine, (EMPLOYEE,), action, **mine)


def test_nobody_approves_or_pays_their_own_claim(engine: PolicyEngine) -> None:
    assert allowed(engine, (APPROVER,), A.EXPENSE_APPROVE)
    assert allowed(engine, (FINANCE,), A.EXPENSE_REIMBURSE)
    every_role = (EMPLOYEE, APPROVER, FINANCE, "admin")
    for action in (A.EXPENSE_APPROVE, A.EXPENSE_REIMBURSE):
        assert not allowed(engine, every_role, action, employee=ME)
    # Approving is not paying, and paying is not approving.
    assert not allowed(engine, (APPROVER,), A.EXPENSE_REIMBURSE)
    assert not allowed(engine, (FINANCE,), A.EXPENSE_APPROVE)


def test_money_never_moves_on_the_assistants_word(engine: PolicyEngine) -> None:
    assert allowed(engine, (FINANCE,), A.EXPENSE_REIMBURSE, channel=Channel.UI)
    assert not allowed(engine, (FINANCE,), A.EXPENSE_REIMBURSE, channel=Channel.AI_TOOL)
    # Approving moves no money: the assistant may do it when nothing else stops it.
    assert allowed(engine, (APPROVER,), A.EXPENSE_APPROVE, channel=Channel.AI_TOOL)


def test_another_tenants_claim_is_out_of_reach_of_every_role(engine: PolicyEngine) -> None:
    every_role = (EMPLOYEE, APPROVER, FINANCE, "admin")
    for action in A.ALL:
        for employee in (ME, SOMEONE):
            assert not allowed(engine, every_role, action, employee=employee, tenant="t2")
            assert not allowed(engine, every_role, action, employee=employee, tenant="")


def test_the_decisions_match_the_reviewed_snapshot() -> None:
    fragment = policy_fragment(EXPENSES)
    assert fragment is not None
    scope = app_scope(fragment)
    # Decided with the runtime's policies and this app's alone: another app never changes it.
    decided = decide_all(policy_engine([EXPENSES]), scope)
    assert decided == read_snapshot(scope)
    assert sum(decided.values()) > 0
