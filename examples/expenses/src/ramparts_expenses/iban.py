"""IBANs as people write them: checked (ISO 13616 mod 97) and put in one form to compare."""

from __future__ import annotations

import re

__all__ = ["IBAN_ARGUMENT", "InvalidIbanError", "normal_iban"]

#: An IBAN as a person or a model may write it, in groups or not (the service checks it).
IBAN_ARGUMENT = r"^[A-Za-z]{2}[0-9]{2}[A-Za-z0-9 ]{11,40}$"
_COMPACT = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")


class InvalidIbanError(ValueError):
    """Not an IBAN: the wrong shape or a failed check digit (a typo)."""


def normal_iban(written: str) -> str:
    """The IBAN in capitals without spaces, when its check digits hold."""
    compact = "".join(written.split()).upper()
    if not _COMPACT.fullmatch(compact):
        raise InvalidIbanError("not an IBAN: two letters, two check digits, 11 to 30 more")
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    if int(digits) % 97 != 1:
        raise InvalidIbanError("not an IBAN: its check digits do not match")
    return compact
