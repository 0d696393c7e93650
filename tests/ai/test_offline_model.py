"""The offline model knows no app: it picks the offered tool the user's words name, fills its
required ids from the message, and summarises what came back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ramparts.ai.models import ModelTurn, OfflineModel, ToolCall

ID = "7f3c2a10-0000-4000-8000-000000000001"


def _tool(name: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    properties = {field: {"type": "string"} for field in required}
    parameters = {"type": "object", "properties": properties, "required": list(required)}
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


TOOLS = [
    _tool("list_expenses"),
    _tool("read_receipt", ("expense_id",)),
    _tool("approve_expense", ("expense_id",)),
    _tool("submit_expense", ("title", "amount")),
]


def _turn(message: str, tools: list[dict[str, Any]] = TOOLS) -> ModelTurn:
    return asyncio.run(OfflineModel().complete([{"role": "user", "content": message}], tools))


@pytest.mark.parametrize(
    ("message", "call"),
    [
        ("list my expenses", ToolCall("list_expenses", {})),
        (f"approve expense {ID}", ToolCall("approve_expense", {"expense_id": ID})),
        # A bare id goes to a read, never to a write that happens to take an id.
        (f"what about expense {ID}?", ToolCall("read_receipt", {"expense_id": ID})),
        (f"{ID}", ToolCall("read_receipt", {"expense_id": ID})),
    ],
)
def test_it_calls_the_tool_the_words_name(message: str, call: ToolCall) -> None:
    assert _turn(message).tool_calls == (call,)


def test_a_tool_whose_arguments_it_cannot_fill_is_never_called() -> None:
    turn = _turn("submit this")  # submit_expense needs a title and an amount
    assert turn.tool_calls == ()
    assert turn.text == (
        "I can help with that. Tools available to you: "
        "approve_expense, list_expenses, read_receipt, submit_expense."
    )
    assert _turn(f"approve {ID}", [_tool("approve_expense", ("expense_id", "approver_id"))]).text


@pytest.mark.parametrize(
    ("result", "reply"),
    [
        (
            {"ids": ["a"], "expenses": [{"description": "Taxi", "status": "submitted"}]},
            "Your expenses:\n- Taxi (submitted)",
        ),
        ({"ids": [], "expenses": []}, "Your expenses:\n(none)"),
        ({"id": ID, "text": "Line one\nLine two", "note": "x"}, "Line one\nLine two"),
        ({"title": "Taxi", "status": "approved"}, "Taxi: approved"),
        (["not", "an", "object"], "Done."),
    ],
)
def test_it_answers_from_the_tool_result(result: Any, reply: str) -> None:
    messages = [{"role": "tool", "content": json.dumps(result)}]
    assert asyncio.run(OfflineModel().complete(messages, TOOLS)).text == reply


def test_an_id_goes_to_a_tool_of_its_kind() -> None:
    tools = [_tool("get_order", ("order_id",)), *TOOLS]
    assert _turn(f"what about expense {ID}?", tools).tool_calls == (
        ToolCall("read_receipt", {"expense_id": ID}),
    )
    assert _turn(f"what about order {ID}?", tools).tool_calls == (
        ToolCall("get_order", {"order_id": ID}),
    )


@pytest.mark.parametrize(
    "message",
    [
        f"Should I approve expense {ID}? It looks suspicious.",
        f"Who is allowed to approve expense {ID}",
        f"Do not approve expense {ID}.",
        f"never approve expense {ID}",
        f"I wonder whether to approve expense {ID}",
    ],
)
def test_a_question_or_a_negation_never_writes(message: str) -> None:
    calls = _turn(message).tool_calls
    assert all(call.name != "approve_expense" for call in calls), calls


def test_an_order_writes() -> None:
    assert _turn(f"Please approve expense {ID}").tool_calls == (
        ToolCall("approve_expense", {"expense_id": ID}),
    )
