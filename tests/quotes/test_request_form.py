"""Prices typed on the request form become minor units exactly, or a sentence saying why not."""

from __future__ import annotations

import pytest

from ramparts.quotes.request_form import PriceError, RequestForm, minor_units


@pytest.mark.parametrize(
    ("typed", "minor"),
    [("12.50", 1250), ("12.5", 1250), ("12", 1200), (" 0.99 ", 99), ("0", 0), ("0.07", 7)],
)
def test_a_price_is_read_exactly(typed: str, minor: int) -> None:
    assert minor_units(typed) == minor


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("12,5", "with a dot"),
        ("-1", "negative"),
        ("1e3", "not a price"),
        ("12.505", "not a price"),
        ("0x10", "not a price"),
        ("١٢", "not a price"),  # digits of another script: not what the pattern reads
        ("", "enter a price"),
        ("100000001", "more than 100,000,000"),
    ],
)
def test_a_typed_price_that_is_not_one_is_refused_with_why(typed: str, says: str) -> None:
    with pytest.raises(PriceError, match=says):
        minor_units(typed)


def test_empty_rows_are_left_out_and_a_half_filled_one_is_refused() -> None:
    form = RequestForm.read(
        {
            "title": " Chairs ",
            "currency": "EUR",
            "item-1-description": "Chair",
            "item-1-quantity": "4",
            "item-1-price": "12.50",
            "item-3-quantity": "2",
        }
    )
    assert form.body() is None
    assert form.errors == {
        "item-3-description": "Item 3: describe the item.",
        "item-3-price": "Item 3: enter a price, for example 12.50.",
    }
    form.rows[2].quantity = ""
    assert form.body() == {
        "title": "Chairs",
        "description": "",
        "currency": "EUR",
        "items": [{"description": "Chair", "quantity": 4, "unit_price_minor": 1250}],
    }
    assert RequestForm.read({"title": "x", "currency": "JPY"}).body() is None
    form.rows[0].quantity = "٤"  # a digit of another script
    assert form.body() is None
    assert form.errors == {
        "item-1-quantity": "Item 1: the quantity is a whole number from 1 to 1,000,000."
    }
