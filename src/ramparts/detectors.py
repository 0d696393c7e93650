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
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PERSONAL_KINDS",
    "SECRET_KINDS",
    "Finding",
    "Kind",
    "Redactor",
    "find_sensitive",
    "is_secret_name",
    "luhn_valid",
]


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


#: Personal data: masked with reversible tokens before a model sees it. Every other kind is a
#: secret: refused in what a user sends, redacted in what a tool returns, never passed on.
PERSONAL_KINDS = frozenset({Kind.CARD, Kind.IBAN, Kind.SSN, Kind.EMAIL, Kind.PHONE})
SECRET_KINDS = frozenset(Kind) - PERSONAL_KINDS

_Span = tuple[int, int]
_Finder = Callable[[str, int, int], Iterator[_Span]]  # text, from, to


# --- normalisation ---------------------------------------------------------------------------
# The detectors read a folded copy of the text, so fullwidth digits, no-break or thin spaces,
# Unicode dashes and zero-width characters cannot hide a value; findings are reported on the
# original text. ASCII text, nearly all of it, is its own fold.
_INVISIBLE = frozenset("\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u2060\ufeff")


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    category = unicodedata.category(char)
    if char in _INVISIBLE or category == "Mn":  # combining marks: "u" + "¨" reads as "u"
        return ""
    if category == "Zs":
        return " "
    if category == "Pd" or char == "\u2212":  # dashes and the minus sign
        return "-"
    if char.isdecimal():  # any script's digits: ٤١١١ is 4111
        return str(unicodedata.decimal(char))
    if char in "\u3002\uff61":  # ideographic full stops: bob@example。com
        return "."
    return unicodedata.normalize("NFKC", char)  # fullwidth at-signs and digits: ASCII


def _fold(text: str) -> tuple[str, list[int] | None]:
    """The folded text and, when it differs in length, each folded index's original index
    (one extra entry for the end)."""
    if text.isascii():
        return text, None
    pieces = [_fold_char(c) for c in text]
    if all(len(p) == 1 for p in pieces):
        return "".join(pieces), None
    origin = [index for index, piece in enumerate(pieces) for _ in piece]
    origin.append(len(text))
    return "".join(pieces), origin


_NOT_DIGIT = re.compile(r"\D")


def _digits(value: str) -> str:
    """The value's digits in ASCII, whatever script they were written in."""
    digits = _NOT_DIGIT.sub("", value)
    return digits if digits.isascii() else "".join(str(unicodedata.decimal(c)) for c in digits)


# --- checks ----------------------------------------------------------------------------------
def luhn_valid(number: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check (card numbers do)."""
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_brand(number: str) -> bool:
    """Whether some card network issues numbers of this prefix and length (the IIN ranges of
    Visa, Mastercard, Amex, Diners, JCB, Discover, UnionPay, Maestro and Mir): a 16-digit
    order number that passes Luhn by chance usually does not."""
    length, two, four = len(number), int(number[:2]), int(number[:4])
    first = number[0]
    if first == "4":  # Visa
        issued = length in {16, 19}
    elif first == "2":  # Mastercard 2-series, Mir
        issued = (2221 <= four <= 2720 and length == 16) or 2200 <= four <= 2204
    elif first == "3":  # Amex 34/37; JCB 3528-3589; Diners 300-305, 36, 38, 39
        issued = (
            length == 15
            if two in {34, 37}
            else (3528 <= four <= 3589 or two in {30, 36, 38, 39}) and length >= 14
        )
    elif first == "5":  # Mastercard 51-55, Maestro 50 and 56-59
        issued = length == 16 if 51 <= two <= 55 else length >= 13
    else:  # Discover, UnionPay, Maestro, RuPay
        issued = first == "6"
    return issued


def _card_valid(value: str) -> bool:
    digits = _digits(value)
    return 13 <= len(digits) <= 19 and _card_brand(digits) and luhn_valid(digits)


def _card_digits(value: str) -> str:
    """The card number in a finding that may end with its security code (`…1111/123`)."""
    digits = _digits(value)
    for number in (digits, digits[:-3], digits[:-4]):
        if _card_valid(number):
            return number
    return digits


# A security code written right after the number (`4111 1111 1111 1111/123`) goes with it.
def _with_security_code(finder: _Finder) -> _Finder:
    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        for span in finder(text, start, end):
            code = _CODE_AFTER.match(text, span[1])
            yield (span[0], code.end()) if code is not None else span

    return find


_CODE_AFTER = re.compile(r"/\d{3,4}(?![\w/]|[.,-]\d)")


# ISO 13616 registry: every IBAN country and its IBAN length.
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "FK", "GL", "NL", "SD"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "OM", "SO", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["LY", "PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HN", "HU", "LB", "NI", "PL"], 28),
    **dict.fromkeys(["SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU", "YE"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
    **dict.fromkeys(["RU"], 33),
}


def _iban_valid(value: str) -> bool:
    """ISO 13616 mod-97 check: rearranged, letters as numbers, remainder 1."""
    compact = _compact(value)
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _compact(value: str) -> str:
    """An IBAN without its separators, in capitals."""
    return "".join(c for c in value if c.isalnum()).upper()


def _ssn_valid(value: str) -> bool:
    """The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000."""
    digits = _digits(value)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


# A nine-digit number however split, or a 3-3-4 or 0-prefixed number, is a value of its
# kind unless the words before it name it as something else ("order 123456789"); words that
# name it as personal data win ("SSN 078051120", "phone no. 030 1234567").
_PHONE_WORDS = (
    r"phone|tel|telephone|mobile|mobil|cell|cellphone|handy|natel|fax|whatsapp|sms|telefon"
    r"|telefono|teléfono|téléphone|tél|portable|cellulare|móvil|celular|ph"
)
_NAMED_PERSONAL = re.compile(
    r"(?i)\b(?:ssn|social security|soc\.? ?sec|tax ?id|tin|" + _PHONE_WORDS + r")\b"
)
_NAMED_OTHER = re.compile(
    r"(?i)(?:\b(?:order|invoice|inv|ref|reference|tracking|ticket|sku|serial|part|item|article"
    r"|batch|lot|case|booking|confirmation|shipment|parcel|account|acct|customer|quote|po|id"
    r"|no|nr|number|code|pin|amount|total|qty|quantity|schedule|slots?|rooms?|days|weeks|lots"
    r"|steps|chapters|sections|pages|lines|levels|floors|seats|rows)(?:_\w+)?|#)\W{0,3}$"
)


def _personal_by_context(text: str, start: int) -> bool:
    before = text[max(0, start - 40) : start]
    return _NAMED_PERSONAL.search(before) is not None or _NAMED_OTHER.search(before) is None


def _ssn_plausible(text: str, start: int, value: str) -> bool:
    return _ssn_valid(value) and _personal_by_context(text, start)


def _phone_digits(value: str) -> str:
    digits = _digits(value.replace("(0)", ""))
    return digits[2:] if value.startswith("00") else digits


def _international_phone(text: str, start: int, value: str) -> bool:
    # A `+` says phone; a leading `00` may be a tracking or order number's own zeros.
    return 8 <= len(_phone_digits(value)) <= 15 and (
        value.startswith("+") or _phone_by_context(text, start, value)
    )


# A count of things right after the digits ("we need 025 412 3456 screws") makes them a
# quantity: a plural noun or a unit, not the words that follow a phone number in a sentence.
_QUANTITY_AFTER = re.compile(
    r" (?:x )?(?:pcs|pc|ea|kg|units?|pieces?|items?|(?P<plural>[a-z]{3,}[^s\W]s))\b(?!['\u2019])"
)
_NOT_PLURALS = frozenset(
    re.findall(
        r"\w+",
        "thanks always perhaps unless towards besides sometimes whereas afterwards anyways"
        " regards hours days weekdays weekends mornings evenings afternoons nights mondays"
        " tuesdays wednesdays thursdays fridays saturdays sundays works opens closes answers"
        " rings calls goes does says asks",
    )
)


def _sequence(value: str) -> bool:
    """`01 02 03 04 05`, `02 04 06 08 10`: four or more groups counting up or down by one
    small step are a list of numbers, not a number (`01 23 45 67 89` is a French phone)."""
    groups = [int(g) for g in _DIGIT_GROUP.findall(value)]
    steps = {b - a for a, b in itertools.pairwise(groups)}
    return len(groups) >= 4 and len(steps) == 1 and abs(steps.pop()) <= 10


def _phone_by_context(text: str, start: int, value: str) -> bool:
    """Digits shaped like a phone number are one unless their words say otherwise: named as
    something else before, counting things after, or a counted sequence."""
    before = text[max(0, start - 40) : start]
    if _NAMED_PERSONAL.search(before) is not None:
        return True
    if _NAMED_OTHER.search(before) is not None or _sequence(value):
        return False
    after = _QUANTITY_AFTER.match(text, start + len(value))
    return after is None or after.group("plural") in _NOT_PLURALS


def _nanp_phone(text: str, start: int, value: str) -> bool:
    return len(_digits(value)) in {10, 11} and _phone_by_context(text, start, value)


_DATE = re.compile(r"\d{1,2}([./-])\d{1,2}\1\d{2,4}(?!\d)")


def _national_phone(text: str, start: int, value: str) -> bool:
    """`030/12345678`, `020 7946 0958`, `01 23 45 67 89`: a trunk 0 and 9 to 12 digits,
    not a date."""
    return (
        9 <= len(_digits(value)) <= 12
        and _DATE.match(value) is None
        and _phone_by_context(text, start, value)
    )


def _labelled_phone(value: str) -> bool:
    """A number named as a phone (`phone: 5551234567`): 7 to 15 digits, not a date."""
    return 7 <= len(_phone_digits(value)) <= 15 and _DATE.match(value) is None


# An extension belongs to its number: `+1 555 123 4567 ext. 89`, `x123`, `Durchwahl 12`.
_EXTENSION = re.compile(
    r"(?i)[ \t]{0,2}[,;]?[ \t]{0,2}(?:ext\.?|extn\.?|extension|x|#|durchwahl|dw\.?|nebenstelle"
    r"|poste|int\.?|interno)[ \t]{0,2}[:.-]?[ \t]{0,2}\d{1,6}(?!\d)"
)


def _with_extension(finder: _Finder) -> _Finder:
    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        for span in finder(text, start, end):
            extension = _EXTENSION.match(text, span[1])
            yield (span[0], extension.end()) if extension is not None else span

    return find


# --- finders ---------------------------------------------------------------------------------
_ValidMatch = Callable[[re.Match[str]], bool]


def _matches(
    pattern: re.Pattern[str],
    valid: Callable[[str], bool] | None = None,
    *,
    valid_match: _ValidMatch | None = None,
) -> _Finder:
    """Each match (its named group, when the pattern has some) that passes `valid` (given
    the value) and `valid_match` (given the whole match)."""

    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        for match in pattern.finditer(text, start, end):
            group = match.lastgroup or 0  # the named group of the alternative that matched
            if (valid is None or valid(match.group(group))) and (
                valid_match is None or valid_match(match)
            ):
                yield match.span(group)

    return find


_DIGIT_GROUP = re.compile(r"\d+")
_Valid = Callable[[str, int, str], bool]


def _grouped(pattern: re.Pattern[str], valid: _Valid, *, anchored: bool) -> _Finder:
    """The longest valid run of digit groups inside each match. Prose around a value may add
    a group after it ("+44 20 7946 0958 2026") or, unless the value is `anchored` at the
    match's start (a phone's `+`), before it ("qty 2 4111 1111 1111 1111"): a regular
    expression alone would take the longer run, fail the check, and let the value through."""

    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        for match in pattern.finditer(text, start, end):
            groups = [m.span() for m in _DIGIT_GROUP.finditer(text, *match.span())]
            first = 0
            while first < len(groups):
                span = _longest(text, match.start(), groups, first, valid, anchored=anchored)
                if span is None:
                    break
                yield span[:2]
                first = span[2] + 1
                if anchored:
                    break

    return find


def _longest(
    text: str,
    start: int,
    groups: list[_Span],
    first: int,
    valid: _Valid,
    *,
    anchored: bool,
) -> tuple[int, int, int] | None:
    """(start, end, last group) of the longest valid run from group `first` on."""
    count = len(groups)
    for size in range(count - first, 0, -1):
        for low in [first] if anchored else range(first, count - size + 1):
            if low > first and groups[low - 1][1] - groups[low - 1][0] >= 4:
                continue  # inside a longer number (a tracking number), not after a word
            begin = start if anchored else groups[low][0]
            high = low + size - 1
            if valid(text, begin, text[begin : groups[high][1]]):
                return begin, groups[high][1], high
    return None


def _ibans(text: str, start: int, end: int) -> Iterator[_Span]:
    """A country code, check digits, then exactly the country's length in letters and
    digits, in any case, compact or split anywhere by up to three spaces, dashes, dots,
    slashes or underscores; the next character must not continue it. The registry length,
    not a pattern, says where an IBAN ends, so `DE89 3704 0044 0532 0130 00 12 chairs` stops
    before `12`."""
    for match in _IBAN_START.finditer(text, start, end):
        length = _IBAN_LENGTHS.get(match.group(1).upper())
        if length is None:
            continue
        need, position, gap = length - 4, match.end(), 0
        while need and position < len(text):
            char = text[position]
            if char.isascii() and char.isalnum():
                need, gap = need - 1, 0
            elif char in " .-/_" and gap < 3:
                gap += 1
            else:
                break
            position += 1
        if need or gap:
            continue
        after = text[position : position + 1]
        if after.isalnum() or not _iban_valid(text[match.start() : position]):
            continue
        yield match.start(), position


def _keyed(
    pattern: re.Pattern[str], keys: re.Pattern[str], valid: _ValidMatch | None = None
) -> _Finder:
    """Each match of `pattern` that starts where one of its key words (`keys`, lowercase
    literals) does, and passes `valid`: a search for a few literals is fast, and trying a
    long pattern from every position of the text is not."""

    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        lowered = text.lower()
        if len(lowered) != len(text):  # a rare letter whose lowercase is longer
            yield from _matches(pattern, valid_match=valid)(text, start, end)
            return
        done = start
        for key in keys.finditer(lowered, start, end):
            if key.start() < done:
                continue
            match = pattern.match(text, key.start(), end)
            if match is not None and (valid is None or valid(match)):
                group = match.lastgroup or 0
                done = match.end()
                yield match.span(group)

    return find


def _emails(pattern: re.Pattern[str]) -> _Finder:
    """Each match around an `@` (or a written-out `[at]`): few texts hold many, so the
    pattern runs near them instead of from every word of the text."""

    def find(text: str, start: int, end: int) -> Iterator[_Span]:
        done = start
        for at in _AT.finditer(text, start, end):
            if at.start() < done:
                continue
            # A local part is at most 64 characters (RFC 5321), a domain at most 255.
            low = max(done, at.start() - 64)
            match = pattern.search(text, low, min(end, at.end() + 256))
            if match is not None and match.start() <= at.start():
                done = match.end()
                yield match.span()

    return find


# `@`, `%40`, `[at]`, `[@]`, `(at)`, and the spelt-out `bob at example dot com`.
_AT = re.compile(r"@|%40|[\[({] ?(?:@|(?i:at)) ?[\])}]|\s(?i:at)\s+[^\W_][\w.-]*\s+(?i:dot)\s")
_IBAN_START = re.compile(r"(?<![^\W_])([A-Za-z]{2})[ ]?(\d{2})")

# `password: x` and `db_password=x` hide whatever follows; `token: x` only what looks like a
# credential (16+ token characters), so prose such as "malformed token: decode_error" stays
# readable. Only the value is replaced: "db_password=[PASSWORD]" still says what was there.
_CREDENTIAL_WORDS = (
    r"password|passwd|pwd|pw|pass|passphrase|pass phrase|passcode|pin|passwort|kennwort"
    r"|wachtwoord|contrase[ñn]a|senha|mot de passe|secret|credentials?|пароль|парола|パスワード"
    r"|密码|密碼|heslo|has[łl]o|l[öo]senord|parola|salasana|passord|adgangskode|jelsz[óo]|lozinka"
    r"|geslo|[şs]ifre|κωδικός"
)
_KEY_WORDS = (
    r"api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|token|auth[_-]?key"
    r"|account[_-]?key|shared[_-]?access[_-]?key|storage[_-]?key|master[_-]?key"
    r"|signing[_-]?key"
)
# The word alone or inside an identifier: `aws_secret_access_key`, `DB-PASSWORD`, `dbPassword`.
# Only the word's own start is checked (a word, a segment, a camel-case hump), not the whole
# identifier matched: the value is what is reported, and scanning every word is slow.
_NAMED = (
    r"(?:(?<![A-Za-z0-9])|(?<=[_.-])|(?<=[a-z0-9])(?-i:(?=[A-Z])))(?:{words})"
    r"(?:[_.-][A-Za-z0-9]+|(?-i:[A-Z][a-z0-9]*))*"
)
_SEPARATOR = r"\s*(?::=|=>|->|→|[:=])\s*"
# A YAML block or folded scalar (`password: |`, `>-`) or a list dash announces the value on
# the next line: the indicator is not the value.
_INDICATOR = r"(?:[|>][-+]?[1-9]?[ \t]*(?=\r?\n)\s*|-[ \t]+)?"
# Quoted (straight, curly or angle quotation marks), or unquoted: a word, and the plain lowercase
# words after it up to the end of the clause ("ssh passphrase: correct horse battery
# staple"); "pw: x1!, then" stops at the comma, "pw: x1 and my SSN …" at a joining word, and
# a `name=value` after it is the next field.
_QUOTED = (
    r"\"[^\"\n]*\"|'[^'\n]*'|\u201c[^\u201d\n]*\u201d|\u201e[^\u201c\u201d\n]*[\u201c\u201d]"
    r"|\u2018[^\u2019\n]*\u2019|«[^»\n]*»"
)
_OPENING = r"\"'\u201c\u201e\u2018«"  # a mark that opens a quoted value
_CLOSING = r"\u201d\u2019»"
_JOINING = (
    r"and|or|but|then|for|to|with|the|my|your|our|a|an|in|on|at|of|is|was|are|be|please|from"
    r"|by|as|if|so|also|until|since|before|after|via|use|using|when|which|that|this|und|oder"
    r"|et|ou|y|o|en|bitte"
)
_VALUE = (
    r"(?P<value>"
    + _QUOTED
    + r"|[^\s"
    + _OPENING
    + r"](?:[^\s,;]*[^\s\"',;.)\]}"
    + _CLOSING
    + r"])?"
    r"(?:[ \t]+(?!(?:" + _JOINING + r")\b)(?-i:[^\W\dA-Z_]{2,})(?=[\s,;.)\]}]|$))*)"
)
_ANNOUNCED_CREDENTIAL = (
    "(?i)"
    + _NAMED.format(words=_CREDENTIAL_WORDS)
    + r"[\"']?"
    + _SEPARATOR
    + _INDICATOR
    + _VALUE
    + "|"
    + _NAMED.format(words=_KEY_WORDS)
    + r"[\"']?(?:"
    + _SEPARATOR
    + r"[\"']?(?P<token>[\w./+=-]{16,})|\s+(?P<loose>[\w./+=-]{16,}))"
)
# Said in words or without a separator: "my password is Hunter2Hunter2", "The password was
# changed to X", "set PASSWORD to X", "new password X", "password -> X", "my PIN is 4821".
# The words between may only be ones that lead to a value; the value must look like one (a
# digit, a symbol or a capital after the first letter; a PIN's digits), so "the password is
# expired" and "reset your password in settings" stay.
_TOLD_WORDS = (
    r"password|passwort|passphrase|passcode|pin|pwd|pw|kennwort|wachtwoord|mot de passe"
    r"|contrase[ñn]a|senha|пароль|パスワード|密码|密碼|heslo|has[łl]o|l[öo]senord|parola"
    r"|salasana|passord|adgangskode|secret(?: access)?(?: key)?"
)
_LEADING = (
    r"is|was|ist|war|lautet|est|était|es|era|är|var|on|oli|je|jest|è|é|to|now|still|been|has"
    r"|have|changed|set|reset|updated|will|be|remains|temporarily|new|here|as|follows|da"
)
_TOLD_VALUE = (
    r"(?P<value>" + _QUOTED + r"|[^\s" + _OPENING + r"]*[^\s" + _OPENING + _CLOSING + r".,;:?)\]])"
)
_TOLD_CREDENTIAL = (
    r"(?i)(?<![^\W_])(?P<word>" + _TOLD_WORDS + r")(?![A-Za-z0-9])"
    r"(?:\s*(?:=>|->|→|[-\u2013\u2014:=])|\s+(?:" + _LEADING + r")(?![^\W_]))*\s*" + _TOLD_VALUE
)
# "The password for the VPN is X": a few words of any kind, then the verb that gives it.
_TOLD_LATER = (
    r"(?i)(?<![^\W_])(?P<word>" + _TOLD_WORDS + r")(?![A-Za-z0-9])[^.\n:=]{0,30}?\s"
    r"(?:is|was|ist|war|lautet|est|es|era|är|er|on|je|jest|è|é)\s+(?:now\s+|still\s+)?"
    + _TOLD_VALUE
)
_DATE_LIKE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{1,2}:\d{2}(?::\d{2})?")


def _credential_like(value: str) -> bool:
    return (
        len(value) >= 6
        and (any(not c.isalpha() for c in value) or any(c.isupper() for c in value[1:]))
        and _DATE_LIKE.fullmatch(value) is None
    )


def _told(match: re.Match[str]) -> bool:
    word, value = match.group("word").lower(), match.group("value")
    if value[:1] in "\"'\u201c\u201e\u2018«":
        return len(value) > 2
    if word == "pin":
        return (value.isdigit() and 4 <= len(value) <= 8) or _credential_like(value)
    if word.startswith("secret"):  # "top secret Project-X" is not one
        return len(value) >= 16 and _credential_like(value)
    return _credential_like(value)


def _announced(match: re.Match[str]) -> bool:
    loose = match.group("loose")  # `aws_secret_access_key<TAB>value`: it must look like one
    return loose is None or _credential_like(loose)


# A user and its password: `Portal login: admin / X`, `login bob@example.com / X`, a .netrc's
# `login bob password X`, `curl -u bob:X`, `mysql -pX`, `sshpass -p X`.
_PAIRED_CREDENTIAL = (
    r"(?i)(?:\b(?:login|log-in|logon|sign-in|signin|user|username|user id|userid|account|creds"
    r"|credentials|benutzer|benutzername)\b[^\S\n]*[:=]?[^\S\n]*[^\s/:]{1,64}[^\S\n]*/[^\S\n]*"
    r"(?P<pair>[^\s/]{4,100}[^\s/.,;:)])"
    r"|\blogin\s+\S+\s+(?:password|passwd)\s+(?P<netrc>\S+)"
    r"|(?<!\S)(?:-u|--user)(?:\s+|=)[\"']?[^\s:\"']*:(?P<user>[^\s\"']+)"
    r"|\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n]*?\s-p(?P<mysql>[^\s\"'-][^\s\"']*)"
    r"|\bsshpass\s+-p\s*(?P<sshpass>\S+))"
)


def _paired(match: re.Match[str]) -> bool:
    pair = match.group("pair")
    return pair is None or _credential_like(pair)


# Most specific first: a private key or JWT must be claimed before the digit detectors see it,
# an IBAN (country, length and checksum) before a card. Each detector has a cheap hint that
# must be present for it to run at all (a pattern, or words of the lowercased text): most
# strings in an event are short names and ids, and skipping them keeps redaction off the hot
# path. Detectors of numbers (`NUMBERS`) run only inside the text's runs of 8 or more digits
# with short separators, found once for all of them.
NUMBERS = None
# Where a credential word may start (lowercase literals), and what the text must hold at all.
_CREDENTIAL_KEYS = (
    "pass|pwd|pw|pin|secret|kennwort|wachtwoord|contrase|senha|mot de passe|пароль|парола"
    "|パスワード|密码|密碼|heslo|hasło|haslo|lösenord|losenord|parola|salasana|passord"
    "|adgangskode|jelsz|lozinka|geslo|şifre|sifre|κωδικός"
)
_CREDENTIAL_HINTS = tuple(_CREDENTIAL_KEYS.split("|"))
_NUMBERS = re.compile(r"(?:\+ ?|\()?\d(?:[ ()./_-]{0,3}\d){7,}")
_Hint = re.Pattern[str] | tuple[str, ...] | None
_DETECTORS: list[tuple[Kind, _Hint, _Finder]] = [
    (
        Kind.PRIVATE_KEY,
        re.compile("PRIVATE KEY"),
        _matches(
            re.compile(
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----"
                r"(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*)"
            )
        ),
    ),
    (
        Kind.JWT,
        re.compile("eyJ"),
        _matches(re.compile(r"\beyJ[\w-]{4,}\.eyJ[\w-]{4,}\.[\w-]*")),
    ),
    (
        Kind.API_KEY,
        re.compile(
            r"_live_|_test_|whsec_|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox|AIza|ya29\.|glpat-"
            r"|npm_|pypi-|SG\.|hooks\.slack\.com|/api/webhooks/|sig="
        ),
        _matches(
            re.compile(
                r"\b(?:(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z+/=]{10,}"
                r"|sk-[\w-]{20,}|(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[0-9A-Za-z]{30,}"
                r"|github_pat_\w{30,}|xox[abprs]-[\w-]{10,}|AIza[\w-]{35}|ya29\.[\w.-]{20,}"
                r"|glpat-[\w-]{20,}|npm_[0-9A-Za-z]{36}|pypi-[\w-]{50,}"
                r"|SG\.[\w-]{16,}\.[\w-]{16,})"
                # Webhook URLs are their own credential; a SAS token's signature is one.
                r"|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[\w/-]+"
                r"|https?://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w-]+"
                r"|(?<=[?&;])sig=(?P<sig>[\w%+/=-]{16,})"
            )
        ),
    ),
    (
        # An AWS secret key written near its key id, labelled or not: `AKIA… and secret wJalr…`.
        Kind.API_KEY,
        re.compile("AKIA|ASIA"),
        _matches(
            re.compile(
                r"(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])[^\n]{0,80}?(?<![\w/+=])"
                r"(?P<aws>[A-Za-z0-9/+=]{40})(?![\w/+=])"
            ),
            lambda value: _credential_like(value) and not value.isdigit(),
        ),
    ),
    (
        Kind.BEARER,
        ("bearer", "authorization"),
        _matches(
            re.compile(
                r"(?i)\bbearer\s+[\w.~+/-]{16,}=*"
                r"|\bauthorization\s*[:=]\s*(?:basic|digest|token)\s+[\w.~+/=-]{8,}"
            )
        ),
    ),
    (
        # A URL that carries its password: postgres://app:S3cret@db:5432/app, redis://:pw@h
        Kind.PASSWORD,
        ("://",),
        _matches(re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:(?P<value>[^\s/?#@]+)@")),
    ),
    (
        # A cookie header is a session: `Cookie: session=…`, `Set-Cookie: id=…`.
        Kind.PASSWORD,
        ("cookie",),
        _matches(re.compile(r"(?im)\b(?:set-)?cookie[ \t]*:[ \t]*(?P<value>[^\s;]+=[^\n]*\S)")),
    ),
    (
        # `<password>X</password>`, `<db:secret>X</db:secret>`
        Kind.PASSWORD,
        re.compile(r"(?i)<[\w:.-]*(?:pass|pwd|secret|token|key)"),
        _matches(
            re.compile(
                r"(?i)<(?P<tag>[\w:.-]*(?:pass|pwd|secret|token|key)[\w:.-]*)(?:\s[^>]*)?>"
                r"(?P<value>[^<]{1,200})</(?P=tag)>"
            )
        ),
    ),
    (
        Kind.PASSWORD,
        (*_CREDENTIAL_HINTS, "key", "token", "credential"),
        _keyed(
            re.compile(_ANNOUNCED_CREDENTIAL),
            re.compile(
                _CREDENTIAL_KEYS + "|credential|api|access|private|auth|token|account"
                "|shared|storage|master|signing"
            ),
            _announced,
        ),
    ),
    (
        Kind.PASSWORD,
        _CREDENTIAL_HINTS,
        _keyed(re.compile(_TOLD_CREDENTIAL), re.compile(_CREDENTIAL_KEYS), _told),
    ),
    (
        Kind.PASSWORD,
        _CREDENTIAL_HINTS,
        _keyed(re.compile(_TOLD_LATER), re.compile(_CREDENTIAL_KEYS), _told),
    ),
    (
        Kind.PASSWORD,
        ("log", "sign", "user", "account", "cred", "benutzer", "-u", "mysql", "mariadb", "sshpass"),
        _keyed(
            re.compile(_PAIRED_CREDENTIAL),
            re.compile(
                "login|log-in|logon|sign-in|signin|user|account|creds|credentials|benutzer"
                "|--user|-u|mysql|mariadb|sshpass"
            ),
            _paired,
        ),
    ),
    (Kind.IBAN, re.compile(r"\d\d"), _ibans),
    (
        Kind.CARD,
        NUMBERS,
        # Compact, or groups of 4 or more digits (4-4-4-4, Amex 4-6-5) split by up to three
        # spaces or one dash, dot, slash or underscore; a short last group (4-4-4-4-3). A
        # slash and digits may follow (`4111 1111 1111 1111/123`, a security code).
        _with_security_code(
            _grouped(
                re.compile(
                    r"(?<![\w.,/-])(?=\d(?:(?: {1,3}| ?[._/-] ?)?\d){12})"
                    r"\d{4,}(?:(?: {1,3}| ?[._/-] ?)\d{4,})*(?:(?: {1,3}| ?[._/-] ?)\d{1,3})?"
                    r"(?![^\W_]|[.,-]\d|_\d)"
                ),
                lambda _text, _start, value: _card_valid(value),
                anchored=False,
            )
        ),
    ),
    (
        # Named, however close: `ssn078051120`, `SSN#078-05-1120`, `social security no. …`.
        Kind.SSN,
        ("ssn", "social", "soc"),
        _keyed(
            re.compile(
                r"(?i)\b(?:ssn|social security(?: number| no\.?)?|soc\.? ?sec\.?(?: no\.?)?)"
                r"[ \t]*(?:#|no\.?|nr\.?|number)?[ \t]*[:=#.-]?[ \t]*"
                r"(?P<value>\d{3}[ .-]{0,3}\d{2}[ .-]{0,3}\d{4})(?![\w]|[.,/-]?\d)"
            ),
            re.compile("ssn|social|soc"),
            lambda match: _ssn_valid(match.group("value")),
        ),
    ),
    (
        Kind.SSN,
        NUMBERS,
        _grouped(
            re.compile(
                r"(?<![\w.,/$€£#-])(?<!\d[ .-])"
                r"\d{3}(?:(?P<sep> ?- ?|[ .])\d{2}(?P=sep)|\d{2})\d{4}"
                r"(?![\w]|[.,/-]?\d| \d)"
            ),
            _ssn_plausible,
            anchored=True,
        ),
    ),
    (
        Kind.EMAIL,
        _AT,
        _emails(
            re.compile(
                # Unicode names and domains (jürgen@müller.de), punycode, and the written-out
                # `name [at] example [dot] com`, `bob%40example.com`, `bob at example dot com`.
                r"(?i)(?<![\w.%+'-])[\w.%+'-]+?"
                r"(?: ?@ ?|%40|\s?[\[({] ?(?:@|at) ?[\])}]\s?|\s+at\s+(?=[^\W_][\w.-]*\s+dot\s))"
                r"(?:[^\W_][\w-]*(?:\.|\s?[\[({] ?(?:\.|dot) ?[\])}]\s?|\s+dot\s+))+"
                r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{2,59})(?![\w-])"
            )
        ),
    ),
    (
        # Named as a phone, in any form: `phone: 5551234567`, `Mobil: 01734567890`.
        Kind.PHONE,
        tuple(_PHONE_WORDS.split("|")),
        _with_extension(
            _keyed(
                re.compile(
                    r"(?i)\b(?:" + _PHONE_WORDS + r")\b\.?(?:[ \t]*(?:no|nr|number|num|#)\b\.?)?"
                    r"[ \t]*[:=#.-]?[ \t]*(?P<value>(?:\+ ?)?\d(?:[ ./()-]{0,2}\d){6,16})"
                    r"(?![\w]|[.,/-]?\d)"
                ),
                re.compile(_PHONE_WORDS.lower()),
                lambda match: _labelled_phone(match.group("value")),
            )
        ),
    ),
    (
        Kind.PHONE,
        NUMBERS,
        _with_extension(
            _grouped(
                # +44 20 7946 0958, 0049 (0)30 1234567, +1 (212) 555-0100, +91 98765 43210,
                # and E.164 as written by machines: +41446681800, tel:+14155550100
                re.compile(
                    r"(?<![\w+])(?:(?:\+ ?|(?<!\d)(?<!\d[ .-])00)[1-9]\d{0,3}"
                    r"(?:(?:[ ./-]{1,2}|(?=\()|(?<=\)))(?:\(\d{1,5}\)|\d{1,8})){1,8}"
                    r"|\+[1-9]\d{7,14})(?!\w)"
                ),
                _international_phone,
                anchored=True,
            )
        ),
    ),
    (
        Kind.PHONE,
        NUMBERS,
        _with_extension(
            _grouped(
                # (555)123-4567, 555.123.4567, 1-800-555-0100, 555-123-4567x123
                re.compile(
                    r"(?<![\w+./-])(?<!\d[ .-])(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-]?)\d{3}[ .-]"
                    r"\d{4}(?!(?!x\d)\w|[.,/-]?\d)"
                ),
                _nanp_phone,
                anchored=True,
            )
        ),
    ),
    (
        Kind.PHONE,
        NUMBERS,
        _with_extension(
            _grouped(
                # A national number with its trunk 0: 030/12345678, (030) 1234567, 020 7946 0958
                re.compile(
                    r"(?<![\w+./-])(?<!\d[ .-])(?:\(0[1-9]\d{0,3}\) ?|0[1-9]\d{0,3}(?: ?/ ?|[ .-]))"
                    r"\d{2,8}(?:[ .-]\d{2,8}){0,4}(?!(?!x\d)\w|[.,/:-]?\d)"
                ),
                _national_phone,
                anchored=True,
            )
        ),
    ),
]
#: Nothing shorter can hold any of the values above (the shortest is an email, `a@b.co`).
_SHORTEST = 6


def find_sensitive(text: str) -> list[Finding]:
    """Every detected secret or personal value in `text`, in order, none overlapping."""
    if len(text) < _SHORTEST:
        return []
    folded, origin = _fold(text)
    lowered = folded.lower()
    numbers = [m.span() for m in _NUMBERS.finditer(folded)]
    claimed: list[_Span] = []
    found: list[Finding] = []
    for kind, hint, finder in _DETECTORS:
        if hint is NUMBERS:
            # Three characters past a run, so a pattern's look-ahead sees how it ends.
            scopes = [(start, min(len(folded), end + 3)) for start, end in numbers]
        elif isinstance(hint, tuple):
            scopes = [(0, len(folded))] if any(word in lowered for word in hint) else []
        else:
            scopes = [(0, len(folded))] if hint.search(folded) else []
        for scope in scopes:
            for span in finder(folded, *scope):
                if any(span[0] < e and s < span[1] for s, e in claimed):
                    continue
                claimed.append(span)
                start, end = span if origin is None else (origin[span[0]], origin[span[1]])
                found.append(Finding(kind, start, end, text[start:end]))
    return sorted(found, key=lambda f: f.start)


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
        if kind is Kind.EMAIL:  # one address however it is written: case, width, IDN form
            normal = unicodedata.normalize("NFKC", value).strip().casefold()
        else:
            normal = _digits(value) or value
        mac = hmac.new(self._key, f"{kind}:{normal}".encode(), hashlib.sha256)
        return mac.hexdigest()[:12]

    def placeholder(self, finding: Finding) -> str:
        kind = finding.kind
        if kind is Kind.CARD:
            return f"[CARD:…{_card_digits(finding.value)[-4:]}]"
        if kind is Kind.IBAN:
            return f"[IBAN:…{_compact(finding.value)[-4:]}]"
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
