"""PAY-1: a request holding a card number is refused at the edge, naming the field and never
the value, on every route and in every format (JSON, form, query), over real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from ramparts.routes import Exempt, declares
from ramparts.web.cards import holds_card_number

PAN = "4242424242424242"
PROBLEM = "application/problem+json"


def luhn_completed(prefix: str) -> str:
    """`prefix` with the check digit that makes it pass Luhn."""
    for check in "0123456789":
        digits = prefix + check
        total = 0
        for index, char in enumerate(reversed(digits)):
            digit = int(char) * (2 if index % 2 else 1)
            total += digit - 9 if digit > 9 else digit
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "text",
    [
        PAN,
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "card: 4242 4242 4242 4242, exp 12/30",
        f"{PAN} 123",  # with its security code after a space
        "378282246310005",  # Amex, 15 digits
        luhn_completed("4" * 12),  # 13 digits
        luhn_completed("6" * 18),  # 19 digits
        "\u0661\u0662 " + PAN,  # other digits around do not hide it
        # However it is written: other separators, several of them, other scripts, invisibles.
        "4242.4242.4242.4242",
        "4242/4242/4242/4242",
        "4242_4242_4242_4242",
        "4242,4242,4242,4242",
        "4242  4242  4242  4242",
        "4242\t4242\t4242\t4242",
        "4242\u00a04242\u00a04242\u00a04242",
        "4242\u20134242\u20134242\u20134242",
        "4242\u200b424242424242",
        "\uff14\uff12" * 8,  # full-width
        "\u0664\u0662" * 8,  # Arabic-Indic
        f"{PAN}-0000-0000-0000-000000000000",  # a UUID's tail does not swallow it
    ],
)
def test_card_numbers_are_found(text: str) -> None:
    assert holds_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",  # fails Luhn
        luhn_completed("4" * 11),  # 12 digits
        luhn_completed("6" * 19),  # 20 digits
        f"pi_3N{PAN}",  # inside an id
        f"{PAN}abc",
        "+44 20 7946 0958",
        "amount 4242, order 1796632208",
    ],
)
def test_other_numbers_pass(text: str) -> None:
    assert not holds_card_number(text)


def test_uuids_are_not_card_numbers() -> None:
    # The last two groups of a UUID can be sixteen digits that pass Luhn.
    tail = luhn_completed("812342424242424")
    value = f"0a1b2c3d-e5f6-4a7b-{tail[:4]}-{tail[4:]}"
    assert str(uuid.UUID(value)) == value
    assert holds_card_number(f"{tail[:4]}-{tail[4:]}")
    assert not holds_card_number(value)


# --- over HTTP --------------------------------------------------------------------------------
@pytest.fixture
def probe(serve_app: Callable[..., httpx.Client]) -> tuple[httpx.Client, list[Any]]:
    """A server with a public echo route that records every request that reaches it."""
    reached: list[Any] = []

    def add(app: FastAPI) -> None:
        async def echo(request: Request) -> dict[str, Any]:
            reached.append((dict(request.query_params), await request.body()))
            return {"ok": True}

        app.add_api_route(
            "/probe/echo", echo, methods=["GET", "POST"], openapi_extra=declares(Exempt.PUBLIC)
        )

    return serve_app(add), reached


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == "urn:ramparts:problem:card-number-refused"
    assert problem["field"] == field
    assert field in problem["detail"]
    for shape in (PAN, "4242 4242", "4242-4242", "42424242"):
        assert shape not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payment": {"card": {"number": PAN}}}, "payment.card.number"),
        ({"items": ["fine", "4242 4242 4242 4242"]}, "items[1]"),
        ({"pan": int(PAN)}, "pan"),
        ({"pan": float(PAN)}, "pan"),
        ({"note": f"my card is {PAN[:8]}-{PAN[8:]} thanks"}, "note"),
        ({PAN: "as a key"}, "a key in the body"),
        ({"outer": {PAN: 1}}, "a key in outer"),
        ([PAN], "[0]"),
        (PAN, "the body"),
    ],
)
def test_json_bodies(
    probe: tuple[httpx.Client, list[Any]],
    capfd: pytest.CaptureFixture[str],
    body: Any,
    field: str,
) -> None:
    client, reached = probe
    assert_refused(client.post("/probe/echo", json=body), field)
    assert reached == []  # the route never saw it
    logged = capfd.readouterr()
    assert PAN not in logged.out + logged.err


def test_form_bodies_and_query_strings(probe: tuple[httpx.Client, list[Any]]) -> None:
    client, reached = probe
    assert_refused(
        client.post("/probe/echo", data={"name": "A", "cardnumber": PAN}),
        "form field 'cardnumber'",
    )
    assert_refused(
        client.get("/probe/echo", params={"q": "4242 4242 4242 4242"}), "query parameter 'q'"
    )
    # Percent-encoded and `+` for spaces are decoded first.
    assert_refused(client.get("/probe/echo?q=4242+4242%204242-4242"), "query parameter 'q'")
    assert_refused(client.get(f"/probe/echo?{PAN}=1"), "a query parameter name")
    # The query is checked on a request with a body too.
    assert_refused(client.post(f"/probe/echo?ref={PAN}", json={"ok": 1}), "query parameter 'ref'")
    assert reached == []


def test_every_route_is_covered(probe: tuple[httpx.Client, list[Any]]) -> None:
    """The rule runs before routing and authentication: real routes, an unknown one."""
    client, _ = probe
    assert_refused(client.get("/api/quotes", params={"search": PAN}), "query parameter 'search'")
    assert_refused(
        client.post("/oauth/token", data={"grant_type": "password", "password": PAN}),
        "form field 'password'",
    )
    assert_refused(client.post("/api/assistant", json={"message": f"pay {PAN}"}), "message")
    assert_refused(client.get("/no/such/route", params={"x": PAN}), "query parameter 'x'")


def test_paths_are_checked(probe: tuple[httpx.Client, list[Any]]) -> None:
    """An id in a path is logged and stored like any other: a card number is not one, in any
    spelling the rule reads (percent-encoded separators decode before the check)."""
    client, reached = probe
    assert_refused(client.get(f"/api/payments/{PAN}"), "a path segment")
    assert_refused(client.get("/probe/echo/4242%204242%204242%204242"), "a path segment")
    assert_refused(client.post(f"/api/quotes/{PAN}/deposit", json={}), "a path segment")
    assert reached == []


def test_ordinary_requests_pass(probe: tuple[httpx.Client, list[Any]]) -> None:
    client, reached = probe
    body = {
        "amount": 4242,
        "id": "0a1b2c3d-e5f6-4a7b-8123-424242424242",
        "psp_id": "pi_3N4242424242424242",
        "phone": "+44 20 7946 0958",
        "note": "4242424242424241",
    }
    response = client.post("/probe/echo", json=body, params={"page": "2"})
    assert response.status_code == 200, response.text
    assert [(query, json.loads(sent)) for query, sent in reached] == [({"page": "2"}, body)]
