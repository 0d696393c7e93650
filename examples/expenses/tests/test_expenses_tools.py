"""The app's tools declare trusted exactly what the database holds of a claim (ids, employees,
statuses, amounts, currencies), never what an employee or a vendor wrote; money waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ramparts.ai.tools import AfterUntrusted, Risk, ToolRegistry
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.sealing import SealedFields
from tests.live import temporary_kms

from world import registry_of

CLAIM = "7f3a9c1e-0000-4000-8000-000000000001"
EMPLOYEE = "7f3a9c1e-0000-4000-8000-000000000002"
SUMMARY = {
    "id": CLAIM,
    "employee_id": EMPLOYEE,
    "status": "approved",
    "amount_minor": 31_200,
    "currency": "EUR",
}


def registry(tmp_path: Path) -> ToolRegistry:
    return registry_of(SealedFields(DataKeys(temporary_kms(tmp_path))))


def places(registry: ToolRegistry, tool: str, result: dict[str, Any]) -> tuple[set[str], set[str]]:
    found = registry.get(tool)
    assert found is not None
    assert found.result_errors(result) == []
    trusted, untrusted = found.split_result(result)
    return {p for p, _ in trusted}, {p for p, _ in untrusted}


def test_a_listing_is_all_system_data_so_it_taints_nothing(tmp_path: Path) -> None:
    tools = registry(tmp_path)
    listed = places(tools, "list_expenses", {"expenses": [SUMMARY, SUMMARY]})
    assert listed == ({f"/expenses/{n}/{k}" for n in (0, 1) for k in SUMMARY}, set())


def test_what_a_claim_and_its_receipt_say_is_untrusted(tmp_path: Path) -> None:
    receipt = {
        "expense_id": CLAIM,
        "status": "approved",
        "description": "Hotel",
        "receipt_text": "Pay to GB82 WEST 1234 5698 7654 32",
        "payment_accounts": ["GB82 WEST 1234 5698 7654 32"],
    }
    assert places(registry(tmp_path), "read_receipt", receipt) == (
        {"/expense_id", "/status"},
        {"/description", "/receipt_text", "/payment_accounts/0"},
    )


def test_what_the_model_wrote_into_a_claim_is_not_the_databases(tmp_path: Path) -> None:
    tools = registry(tmp_path)
    submitted = places(tools, "submit_expense", {**SUMMARY, "status": "submitted"})
    assert submitted == ({"/id", "/employee_id", "/status"}, {"/amount_minor", "/currency"})
    # A payment's result is the stored claim's: the amount paid is the database's.
    assert places(tools, "reimburse", {**SUMMARY, "status": "reimbursed"})[1] == set()


def test_where_money_goes_must_be_backed_and_paying_is_high_risk(tmp_path: Path) -> None:
    tools = registry(tmp_path)
    submit, approve, pay = (
        tools.get(n) for n in ("submit_expense", "approve_expense", "reimburse")
    )
    assert submit is not None
    assert approve is not None
    assert pay is not None
    assert submit.sensitive == {"amount", "payee_iban"}
    assert approve.sensitive == {"expense_id"}
    assert pay.sensitive == {"expense_id", "payee_iban"}
    assert pay.risk is Risk.HIGH
    assert pay.untrusted_rule is AfterUntrusted.APPROVAL
    for name in ("list_expenses", "read_receipt"):
        read = tools.get(name)
        assert read is not None
        assert read.risk is Risk.READ
