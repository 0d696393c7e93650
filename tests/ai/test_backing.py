"""What backs a sensitive argument, and what an approver is told of its origin: the rules of
`Provenance` that an attacker who writes third-party data or the model's calls would bend."""

from __future__ import annotations

from ramparts.ai.provenance import Provenance

IBAN = "GB82WEST12345698765432"


def test_a_value_once_untrusted_never_backs_whatever_shows_it_later() -> None:
    """A total computed from a vendor's prices, or an amount the model made up that a tool
    echoes through a trusted field, is still the vendor's or the model's."""
    provenance = Provenance()
    provenance.record_result("get_transfer", [], [("/amount_minor", 990_000)])
    provenance.record_result("get_quote", [("/total_minor", 990_000)], [])
    assert not provenance.backs(990_000)
    assert [o["source"] for o in provenance.origins({"a": 990_000}, frozenset({"a"}))["a"]] == [
        "untrusted field",  # first: the approver must see whose value it was
        "trusted field",
    ]

    provenance.note_given({"quantity": 2, "unit_price_minor": 495_000})  # nothing backs them
    provenance.record_result("get_quote", [("/unit_price_minor", 495_000)], [])
    assert not provenance.backs(495_000)


def test_keys_booleans_and_nulls_of_an_argument_must_be_backed_too() -> None:
    provenance = Provenance()
    provenance.vouch_user("send 12000 please", [])
    assert provenance.backs(12000)
    assert not provenance.backs({IBAN: 12000})  # the recipient hides in the key
    assert not provenance.backs([12000, True])
    assert not provenance.backs({"amount": None})
