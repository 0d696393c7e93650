"""Detectors for personal data and secrets in free text, and typed placeholders for them.

One set of detectors serves every place that must not keep raw values: the audit trail redacts
with them before it writes, and the AI gateway masks prompts and outputs with them. Each finding
has a kind; a placeholder names the kind and keeps only what is safe and useful to a reader:
the last four digits of a card or IBAN, or a keyed hash that lets an investigator see that two
events name the same email without learning the email (a plain hash of an email or phone number
is reversed by a dictionary; an HMAC under a key kept out of the database is not).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Finding", "Kind", "Redactor", "find_sensitive", "is_secret_name"]


class Kind(StrEnum):
    PRIVATE_KEY = "PRIVATE_KEY"
    JWT = "JWT"
    API_KEY = "API_KEY"
    BEARER = "BEARER"
    PASSWORD = "PASSWORD"  # noqa: S105 - the name of a kind, not a password
    CARD = "CARD"
    IBAN = "IBAN"
    SSN = "SSN"
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    HIGH_ENTROPY = "HIGH_ENTROPY"  # found by the secret scanner, not by find_sensitive


@dataclass(frozen=True)
class Finding:
    kind: Kind
    start: int
    end: int
    value: str


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _luhn(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban_valid(value: str) -> bool:
    """ISO 13616 mod-97 check: rearranged, letters as numbers, remainder 1."""
    compact = value.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _card_valid(value: str) -> bool:
    digits = _digits(value)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _phone_valid(value: str) -> bool:
    return 8 <= len(_digits(value)) <= 15


# `password: x` hides whatever follows; `token: x` only what looks like a credential (16+
# token characters), so prose such as "malformed token: decode_error" stays readable.
_ANNOUNCED_CREDENTIAL = (
    # Not \b: `db_password=`, `client_secret=` and `"password": "…"` must match too.
    r"(?i)(?<![A-Za-z0-9])(?:(?:password|passwd|pwd|passphrase|secret)[\"']?\s*[:=]\s*"
    r"(?:\"[^\"]*\"|'[^']*'|\S+)"
    r"|(?:api[_-]?key|access[_-]?token|token)[\"']?\s*[:=]\s*[\"']?[\w./+=-]{16,})"
)

# Most specific first: a private key or JWT must be claimed before the digit detectors see it.
# Each detector has a cheap hint that must be present for it to run at all: most strings in
# an event are short names and ids, and skipping them keeps redaction off the hot path.
_Detector = tuple[Kind, re.Pattern[str], re.Pattern[str], Callable[[str], bool] | None]
_DIGITS = re.compile(r"\d\D?\d")
_DETECTORS: list[_Detector] = [
    (
        Kind.PRIVATE_KEY,
        re.compile("PRIVATE KEY"),
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
            r"(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*)"
        ),
        None,
    ),
    (Kind.JWT, re.compile("eyJ"), re.compile(r"\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*"), None),
    (
        Kind.API_KEY,
        re.compile(r"_live_|_test_|whsec_|sk-|AKIA|gh[pousr]_|github_pat_|xox|AIza"),
        re.compile(
            r"\b(?:(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z+/=]{10,}"
            r"|sk-[\w-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[0-9A-Za-z]{30,}"
            r"|github_pat_\w{30,}|xox[abprs]-[\w-]{10,}|AIza[\w-]{35})"
        ),
        None,
    ),
    (
        Kind.BEARER,
        re.compile("(?i:bearer)"),
        re.compile(r"(?i)\bbearer\s+[\w.~+/-]{16,}=*"),
        None,
    ),
    (
        Kind.PASSWORD,
        re.compile("(?i:pass|pwd|secret|key|token)"),
        re.compile(_ANNOUNCED_CREDENTIAL),
        None,
    ),
    (
        Kind.CARD,
        _DIGITS,
        re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"),
        _card_valid,
    ),
    (
        Kind.IBAN,
        _DIGITS,
        # Compact, or printed in groups of four (ISO 13616): never swallowing the next word.
        re.compile(
            r"\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)\b"
        ),
        _iban_valid,
    ),
    (
        Kind.SSN,
        _DIGITS,
        re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
        None,
    ),
    (
        Kind.EMAIL,
        re.compile("@"),
        re.compile(r"\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    (
        Kind.PHONE,
        _DIGITS,
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4})\b"
        ),
        _phone_valid,
    ),
]
_ANY_HINT = re.compile("|".join(sorted({hint.pattern for _, hint, _, _ in _DETECTORS})))
#: Nothing shorter can hold any of the values above (the shortest is an email, `a@b.co`).
_SHORTEST = 6


def find_sensitive(text: str) -> list[Finding]:
    """Every detected secret or personal value in `text`, in order, none overlapping."""
    if len(text) < _SHORTEST or _ANY_HINT.search(text) is None:
        return []
    claimed: list[Finding] = []
    for kind, hint, pattern, valid in _DETECTORS:
        if hint.search(text) is None:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if valid is not None and not valid(match.group()):
                continue
            if any(start < f.end and f.start < end for f in claimed):
                continue
            claimed.append(Finding(kind, start, end, match.group()))
    return sorted(claimed, key=lambda f: f.start)


# Field names whose value is a secret whatever it looks like: exact names, then suffixes
# (`client_secret`, `refresh_token`, `new_password`).
_SECRET_NAMES = {"code", "otp", "totp", "pin", "cvc", "cvv", "authorization", "cookie"}
_SECRET_SUFFIX = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|secret|token|private_key|secret_key|signing_key"
    r"|api_key|code_verifier|client_assertion|recovery_code|authorization_code|card_number"
    r"|set_cookie)$"
)


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Whether a field called `name` holds a secret whatever its value looks like."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # clientSecret -> client_Secret
    normal = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    return any(
        form in _SECRET_NAMES or _SECRET_SUFFIX.search(form)
        for form in (normal, normal.removesuffix("s"))  # recovery_codes, secrets
    )


CACHED_CHARS = 200
CACHED_STRINGS = 4096


class Redactor:
    """Replaces detected values with typed placeholders: `[CARD:…4242]`, `[EMAIL:3f9a…]`."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the redaction key must be at least 32 bytes")
        self._key = key
        # Audit events repeat the same short strings (actions, roles, ids, the actor's name):
        # each is scanned once. Bounded, and it holds only what the process already holds.
        self._done: dict[str, str] = {}

    def fingerprint(self, kind: Kind, value: str) -> str:
        """A short keyed hash: equal values give equal fingerprints, nothing else is learnt."""
        normal = value.strip().lower() if kind is Kind.EMAIL else _digits(value) or value
        mac = hmac.new(self._key, f"{kind}:{normal}".encode(), hashlib.sha256)
        return mac.hexdigest()[:12]

    def placeholder(self, finding: Finding) -> str:
        kind = finding.kind
        if kind is Kind.CARD:
            return f"[CARD:…{_digits(finding.value)[-4:]}]"
        if kind is Kind.IBAN:
            return f"[IBAN:…{finding.value.replace(' ', '')[-4:]}]"
        if kind in {Kind.EMAIL, Kind.PHONE, Kind.SSN}:
            return f"[{kind}:{self.fingerprint(kind, finding.value)}]"
        return f"[{kind}]"

    def text(self, value: str) -> str:
        if len(value) > CACHED_CHARS:
            return "".join(self._pieces(value))
        done = self._done.get(value)
        if done is None:
            if len(self._done) >= CACHED_STRINGS:
                self._done.clear()
            done = self._done[value] = "".join(self._pieces(value))
        return done

    def _pieces(self, value: str) -> Iterator[str]:
        position = 0
        for finding in find_sensitive(value):
            yield value[position : finding.start]
            yield self.placeholder(finding)
            position = finding.end
        yield value[position:]
