"""The Buyer's request form (`/app/quotes/new`): what a person typed, checked field by field
and turned into the body of `POST /api/quotes`.

Prices are typed as decimals ("12.50") and become minor units here, exactly: the text is
read with a pattern, never through float, so "12,5", "-1" and "1e3" are refused with a
message that says what to write instead. The API checks the body again; this is the edge
that makes a person's mistake a sentence next to the field, with nothing created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ramparts.quotes.money import AmountError, typed_minor_units

__all__ = ["CURRENCIES", "ITEM_ROWS", "RequestForm", "minor_units"]

#: The currencies a request may be in; each has two decimals (cents), as prices are typed.
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
#: How many item rows the form offers; empty ones are ignored.
ITEM_ROWS = 5
#: The most a unit price may be, in minor units (the quote_items column's own bound).
MAX_UNIT_PRICE_MINOR = 10_000_000_000
MAX_QUANTITY = 1_000_000
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_ITEM_DESCRIPTION = 500

# ASCII digits only: `\d` and `int` would take digits of every script.
_QUANTITY = re.compile(r"[0-9]{1,7}")


class PriceError(ValueError):
    """A typed price that is not one, with the sentence to show."""


def minor_units(typed: str) -> int:
    """`"12.50"` → 1250: a unit price, 0 or more (`ramparts.quotes.money.typed_minor_units`)."""
    try:
        return typed_minor_units(typed, what="price", maximum=MAX_UNIT_PRICE_MINOR)
    except AmountError as refused:
        raise PriceError(str(refused)) from None


@dataclass
class ItemRow:
    """One row of the form as typed (kept to show the form again)."""

    description: str = ""
    quantity: str = ""
    price: str = ""

    @property
    def empty(self) -> bool:
        return not (self.description.strip() or self.quantity.strip() or self.price.strip())


@dataclass
class RequestForm:
    """The form as typed, and its errors: field name → message (`form` for the whole)."""

    title: str = ""
    description: str = ""
    currency: str = CURRENCIES[0]
    rows: list[ItemRow] = field(default_factory=lambda: [ItemRow() for _ in range(ITEM_ROWS)])
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> RequestForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            title=text("title"),
            description=text("description"),
            currency=text("currency"),
            rows=[
                ItemRow(
                    text(f"item-{n}-description"),
                    text(f"item-{n}-quantity"),
                    text(f"item-{n}-price"),
                )
                for n in range(1, ITEM_ROWS + 1)
            ],
        )

    def body(self) -> dict[str, Any] | None:
        """The API's body, or None with `errors` filled in."""
        self.errors = {}
        title = self.title.strip()
        if not title:
            self.errors["title"] = "Give the request a title."
        elif len(title) > MAX_TITLE:
            self.errors["title"] = f"The title is {len(title)} characters; at most {MAX_TITLE}."
        if len(self.description) > MAX_DESCRIPTION:
            self.errors["description"] = f"The description is at most {MAX_DESCRIPTION:,} long."
        if self.currency not in CURRENCIES:
            self.errors["currency"] = f"Choose one of {', '.join(CURRENCIES)}."
        items = [
            item
            for n, row in enumerate(self.rows, start=1)
            if not row.empty and (item := self._item(n, row)) is not None
        ]
        if all(row.empty for row in self.rows):
            self.errors["item-1-description"] = "Add at least one item."
        if self.errors:
            return None
        return {
            "title": title,
            "description": self.description.replace("\r\n", "\n"),
            "currency": self.currency,
            "items": items,
        }

    def _item(self, n: int, row: ItemRow) -> dict[str, Any] | None:
        description = row.description.strip()
        if not description:
            self.errors[f"item-{n}-description"] = f"Item {n}: describe the item."
        elif len(description) > MAX_ITEM_DESCRIPTION:
            self.errors[f"item-{n}-description"] = (
                f"Item {n}: at most {MAX_ITEM_DESCRIPTION} characters."
            )
        quantity = row.quantity.strip()
        if not _QUANTITY.fullmatch(quantity) or not 1 <= int(quantity) <= MAX_QUANTITY:
            self.errors[f"item-{n}-quantity"] = (
                f"Item {n}: the quantity is a whole number from 1 to {MAX_QUANTITY:,}."
            )
        try:
            price = minor_units(row.price)
        except PriceError as refused:
            self.errors[f"item-{n}-price"] = f"Item {n}: {refused}."
            return None
        if self.errors.keys() & {f"item-{n}-description", f"item-{n}-quantity"}:
            return None
        return {"description": description, "quantity": int(quantity), "unit_price_minor": price}
