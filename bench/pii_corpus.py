"""Recall and precision of the PII detectors on a labelled corpus of the ways people really
write personal data, and of the look-alikes business text is full of (see README.md).

The corpus is generated from a fixed seed, so its labels are exact by construction: one
sentence per sample, holding either one personal value in a named format (emails with
Unicode and punycode domains, cards of eight networks with any separator, IBANs of 80
countries in any case and grouping, SSNs, phone numbers of 13 countries in national and
international form, and two unmarked phone forms it does not claim to catch) or one hard
negative (order and invoice numbers, dates, amounts, tracking numbers, UUIDs, versions, EANs,
ISBNs, numbers that fail a checksum, a bare nine-digit number).

A value counts as found when one finding of its kind covers all of it (a partial match
leaves digits in clear); a finding counts as correct when it overlaps a labelled value of
its kind. Presidio's pattern recognizers run on the same corpus as a baseline.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_report
from bench.pii import KINDS, Span, luhn_complete, ours, presidio

SEED = 20261201
DIGITS = string.digits
Maker = Callable[[random.Random], str]
Sample = tuple[str, list[Span], str]  # text, labelled values, format (or negative) name


def _n(rng: random.Random, count: int, first: str = DIGITS) -> str:
    return rng.choice(first) + "".join(rng.choices(DIGITS, k=count - 1))


def _luhn_break(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def _iban_break(iban: str) -> str:
    return f"{iban[:2]}{(int(iban[2:4]) + 1) % 100:02d}{iban[4:]}"


# --- personal values -------------------------------------------------------------------------
_LOCAL = ["anna", "li.wei", "marco_rossi", "fatima+quotes", "john.smith", "o.brien", "k-tanaka"]
_IDN_LOCAL = ["jürgen", "søren", "josé", "françois", "zoë", "łukasz", "ана", "用户"]
_DOMAINS = ["example.com", "acme.co.uk", "globex.de", "mail.example.org", "firma.at", "corp.io"]
_IDN_DOMAINS = ["müller.de", "bücher.example", "société.fr", "přiklad.cz", "пример.рф", "例子.中国"]


def _email(rng: random.Random) -> str:
    return f"{rng.choice(_LOCAL)}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}"


def _email_idn(rng: random.Random) -> str:
    return f"{rng.choice(_IDN_LOCAL)}@{rng.choice(_IDN_DOMAINS)}"


def _email_upper(rng: random.Random) -> str:
    return _email(rng).upper()


def _email_punycode(rng: random.Random) -> str:
    return f"{rng.choice(_LOCAL)}@xn--mller-kva.de"


def _email_written_out(rng: random.Random) -> str:
    local, domain = _email(rng).split("@")
    name, tld = domain.rsplit(".", 1)
    at, dot = rng.choice([("[at]", "[dot]"), ("(at)", "(dot)"), (" [at] ", " [dot] ")])
    return f"{local}{at}{name}{dot}{tld}"


_BRANDS = [  # (prefixes, lengths, grouping)
    (["4"], [16], (4, 4, 4, 4)),  # Visa
    (["51", "52", "53", "54", "55", "2221", "2500", "2720"], [16], (4, 4, 4, 4)),  # Mastercard
    (["34", "37"], [15], (4, 6, 5)),  # Amex
    (["6011", "65", "644"], [16], (4, 4, 4, 4)),  # Discover
    (["3528", "3566", "3589"], [16], (4, 4, 4, 4)),  # JCB
    (["36", "38"], [14], (4, 6, 4)),  # Diners
    (["62"], [16, 19], (4, 4, 4, 4, 3)),  # UnionPay
    (["50", "56", "58", "6759"], [16], (4, 4, 4, 4)),  # Maestro
]
_CARD_SEPARATORS = ["", " ", "  ", "-", ".", " - ", "\u00a0", "\u2009"]


def _card_number(rng: random.Random) -> tuple[str, tuple[int, ...]]:
    prefixes, lengths, groups = rng.choice(_BRANDS)
    prefix, length = rng.choice(prefixes), rng.choice(lengths)
    number = luhn_complete(prefix + _n(rng, length - len(prefix) - 1))
    return number, groups


def _grouped(number: str, groups: tuple[int, ...], separator: str) -> str:
    parts, position = [], 0
    for size in groups:
        if position < len(number):
            parts.append(number[position : position + size])
            position += size
    return separator.join(parts)


def _card(rng: random.Random) -> str:
    number, groups = _card_number(rng)
    return _grouped(number, groups, rng.choice(_CARD_SEPARATORS))


# The ISO 13616 registry, written out here rather than imported, so a wrong entry in the
# detector's own table shows up as lost recall.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _iban_number(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_LENGTHS))
    length = IBAN_LENGTHS[country]
    letters = country in {"GB", "NL", "IE", "BG", "GI", "MT", "BH", "QA", "KW", "JO", "MU"}
    bank = "".join(rng.choices(string.ascii_uppercase, k=4)) if letters else _n(rng, 4)
    bban = bank + _n(rng, length - 8)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def _iban(rng: random.Random) -> str:
    iban = _iban_number(rng)
    style = rng.choice(["compact", "groups", "lower groups", "dashes", "dots", "head apart"])
    if style == "compact":
        return iban
    if style == "head apart":  # "DE89 370400440532013000"
        return f"{iban[:4]} {iban[4:]}"
    grouped = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    if style == "lower groups":
        return grouped.lower()
    return grouped.replace(" ", {"groups": " ", "dashes": "-", "dots": "."}[style])


def _ssn_digits(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


def _ssn(rng: random.Random) -> str:
    separator = rng.choice(["-", " ", "", ".", " - "])
    return separator.join(_ssn_digits(rng))


_PHONES: list[Maker] = [
    lambda r: f"({_n(r, 3, '23456789')}){_n(r, 3)}-{_n(r, 4)}",
    lambda r: f"({_n(r, 3, '23456789')}) {_n(r, 3)}-{_n(r, 4)}",
    lambda r: f"{_n(r, 3, '23456789')}-{_n(r, 3)}-{_n(r, 4)}",
    lambda r: f"{_n(r, 3, '23456789')}.{_n(r, 3)}.{_n(r, 4)}",
    lambda r: f"+1 {_n(r, 3, '23456789')} {_n(r, 3)} {_n(r, 4)}",
    lambda r: f"1-800-{_n(r, 3)}-{_n(r, 4)}",
    lambda r: f"+44 20 {_n(r, 4)} {_n(r, 4)}",
    lambda r: f"020 {_n(r, 4)} {_n(r, 4)}",
    lambda r: f"07700 {_n(r, 6)}",
    lambda r: f"+49 30 {_n(r, 8)}",
    lambda r: f"030/{_n(r, 8)}",
    lambda r: f"030 {_n(r, 7)}",
    lambda r: f"0049 89 {_n(r, 7)}",
    lambda r: f"+49 (0)30 {_n(r, 8)}",
    lambda r: f"(089) {_n(r, 7)}",
    lambda r: "+33 1 " + " ".join(_n(r, 2) for _ in range(4)),
    lambda r: "01 " + " ".join(_n(r, 2) for _ in range(4)),
    lambda r: f"06-{_n(r, 8)}",
    lambda r: f"+31 6 {_n(r, 8)}",
    lambda r: f"+39 02 {_n(r, 4)} {_n(r, 4)}",
    lambda r: f"+34 912 {_n(r, 3)} {_n(r, 3)}",
    lambda r: f"+91 {_n(r, 5, '6789')} {_n(r, 5)}",
    lambda r: f"+81 3-{_n(r, 4)}-{_n(r, 4)}",
    lambda r: f"+61 2 {_n(r, 4)} {_n(r, 4)}",
    lambda r: f"+55 11 9{_n(r, 4)}-{_n(r, 4)}",
    lambda r: f"+41 44 {_n(r, 3)} {_n(r, 2)} {_n(r, 2)}",
]


def _phone(rng: random.Random) -> str:
    return rng.choice(_PHONES)(rng)


# Written in ways the detectors leave alone on purpose: ten bare digits, or three groups of
# three, are as often order numbers as phone numbers. Kept in the corpus so recall is honest.
_PHONES_UNMARKED: list[Maker] = [
    lambda r: _n(r, 10, "23456789"),  # US, no separators
    lambda r: f"{_n(r, 3, '9')} {_n(r, 3)} {_n(r, 3)}",  # Spain, national
]


def _phone_unmarked(rng: random.Random) -> str:
    return rng.choice(_PHONES_UNMARKED)(rng)


# Forms the attack review found left in clear (issue 12, second round).
def _phone_e164(rng: random.Random) -> str:
    country, length, first = rng.choice(
        [("1", 10, "23456789"), ("44", 10, "7"), ("41", 9, "4"), ("49", 10, "1"), ("91", 10, "9")]
    )
    return f"+{country}{_n(rng, length, first)}"


def _phone_labelled(rng: random.Random) -> str:
    return rng.choice([_n(rng, 10, "23456789"), "0" + _n(rng, 10, "1"), _n(rng, 7, "2345678")])


def _phone_extension(rng: random.Random) -> str:
    number = rng.choice(_PHONES)(rng)
    extension = rng.choice(["ext. {}", "x{}", "Durchwahl {}", "ext {}", "extension {}"])
    return f"{number} {extension.format(_n(rng, rng.randint(2, 4)))}"


def _card_more_separators(rng: random.Random) -> str:
    number, groups = _card_number(rng)
    written = _grouped(number, groups, rng.choice(["_", "/"]))
    return rng.choice([written, f"{_grouped(number, groups, ' ')}/{_n(rng, 3)}"])


def _ssn_glued(rng: random.Random) -> str:
    return rng.choice(["", "-"]).join(_ssn_digits(rng))


def _iban_more_separators(rng: random.Random) -> str:
    iban = _iban_number(rng)
    return rng.choice(["/", "  "]).join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _email_obfuscated(rng: random.Random) -> str:
    local, domain = _email(rng).split("@")
    name, tld = domain.rsplit(".", 1)
    return rng.choice(
        [
            f"{local} at {name} dot {tld}",
            f"{local}[@]{domain}",
            f"{local}%40{domain}",
            f"{local} @ {domain}",
            f"{local}@{name}\u3002{tld}",
        ]
    )


# name: (kind, maker, weight); weights roughly follow how many variants a maker draws from.
FORMATS: dict[str, tuple[str, Maker, float]] = {
    "email ascii": ("EMAIL", _email, 1),
    "email IDN": ("EMAIL", _email_idn, 1),
    "email capitals": ("EMAIL", _email_upper, 1),
    "email punycode": ("EMAIL", _email_punycode, 0.5),
    "email written out": ("EMAIL", _email_written_out, 0.5),
    "card any brand, any separator": ("CARD", _card, 4),
    "IBAN any country, any case and grouping": ("IBAN", _iban, 4),
    "SSN any separator": ("SSN", _ssn, 2),
    "phone 13 countries": ("PHONE", _phone, 4),
    "phone without separators or trunk 0": ("PHONE", _phone_unmarked, 0.3),
    "phone E.164 without separators": ("PHONE", _phone_e164, 0.5),
    "phone named, no separators": ("PHONE", _phone_labelled, 0.5),
    "phone with its extension": ("PHONE", _phone_extension, 0.5),
    "card with _ or / or a security code": ("CARD", _card_more_separators, 0.5),
    "SSN glued to its name": ("SSN", _ssn_glued, 0.3),
    "IBAN split by / or double spaces": ("IBAN", _iban_more_separators, 0.5),
    "email obfuscated": ("EMAIL", _email_obfuscated, 0.5),
}
# Formats whose value is named right before it, so the name is part of the sentence.
FORMAT_TEMPLATES = {
    "phone E.164 without separators": ["Call {} now.", "<a href='tel:{}'>", "WhatsApp {}"],
    "phone named, no separators": ["phone: {}", "Mobil: {}", "Tel. {} (office)"],
    "SSN glued to its name": ["ssn{} on file", "SSN#{}", "Soc. Sec. No. {}"],
}
TEMPLATES = {
    "EMAIL": ["Send the signed quote to {}.", "Questions? Write to {} any time.", "cc: {}"],
    "CARD": ["Please charge card {} for the deposit.", "Card on file: {}, exp 04/29."],
    "IBAN": ["Pay the balance to IBAN {} within 30 days.", "Bank details: {} (Sparkasse)."],
    "SSN": ["Contractor SSN {} is on the W-9.", "Social security number: {}.", "SSN: {}"],
    "PHONE": ["Call our sales desk on {} to confirm.", "Delivery contact: {}.", "Tel. {}"],
}


def _counted(rng: random.Random) -> str:
    """`Schedule: 01 02 03 04 05`: numbers counting up, not a phone number."""
    first, step = rng.randint(1, 5), rng.choice([1, 2])
    numbers = " ".join(f"{first + i * step:02d}" for i in range(5))
    return f"{rng.choice(['Schedule:', 'Rooms', 'Slots'])} {numbers}"


# --- hard negatives: what business text holds that looks like the above -----------------------
NEGATIVES: dict[str, Maker] = {
    "order number": lambda r: f"Order #{_n(r, 8)} ships on Monday.",
    "order number, 9 digits": lambda r: f"Your order {_n(r, 9, '12345678')} is confirmed.",
    "invoice number": lambda r: f"Invoice INV-2026-{_n(r, 7)} is due in 30 days.",
    "invoice no., 9 digits": lambda r: f"Invoice no. {_n(r, 9, '12345678')} was paid.",
    "PO number": lambda r: f"PO {_n(r, 3)}-{_n(r, 2)}-{_n(r, 4)} approved by finance.",
    "reference 3-3-4": lambda r: f"Ref {_n(r, 3)}-{_n(r, 3)}-{_n(r, 4)} refers to the framework.",
    "ISO date": lambda r: f"Delivered on 2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}.",
    "European date and time": lambda r: (
        f"Meeting on {r.randint(1, 28):02d}.{r.randint(1, 12):02d}.2026 "
        f"{r.randint(8, 18):02d}:{r.choice(['00', '15', '30', '45'])} in room {r.randint(1, 99)}."
    ),
    "US date": lambda r: f"Due {r.randint(1, 12):02d}/{r.randint(1, 28):02d}/2026.",
    "timestamp": lambda r: f"at 2026-11-29T{r.randint(0, 23):02d}:30:00.{_n(r, 6)}Z",
    "amount, European": lambda r: (
        f"Total {r.randint(1, 999)}.{_n(r, 3)}.{_n(r, 3)},{_n(r, 2)} EUR incl. VAT."
    ),
    "amount, US": lambda r: f"Total ${r.randint(1, 999)},{_n(r, 3)},{_n(r, 3)}.{_n(r, 2)}.",
    "amount in cents": lambda r: (
        f"amount_minor {_n(r, 9, '123456789')} for {r.randint(2, 99)} units"
    ),
    "quantity and price": lambda r: f"{r.randint(2, 500)} chairs at {r.randint(10, 999)}.00 EUR",
    "UPS tracking": lambda r: f"Tracking 1Z{_n(r, 3)}AA1{_n(r, 8)}",
    "FedEx tracking": lambda r: f"FedEx tracking {_n(r, 4)} {_n(r, 4)} {_n(r, 4)}",
    "USPS tracking": lambda r: "USPS 9400 " + " ".join(_n(r, 4) for _ in range(4)) + " " + _n(r, 2),
    "DHL tracking": lambda r: f"DHL waybill {_n(r, 10)}",
    "UUID": lambda r: (
        f"quote {r.randbytes(16).hex()[:8]}-{r.randbytes(2).hex()}-4{_n(r, 3)}-"
        f"8{_n(r, 3)}-{r.randbytes(6).hex()}"
    ),
    "version string": lambda r: (
        f"Firmware v{r.randint(1, 20)}.{r.randint(0, 40)}.{_n(r, 4)} fixes it"
    ),
    "IP address": lambda r: f"from 10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
    "EAN-13": lambda r: f"EAN {_n(r, 13, '4')}",
    "ISBN": lambda r: f"ISBN 978-3-{_n(r, 2)}-{_n(r, 6)}-{r.randint(0, 9)}",
    "card failing Luhn": lambda r: f"Reference {_luhn_break(_card_number(r)[0])} (void)",
    "Luhn-valid, no card network": lambda r: (
        f"Account {luhn_complete(_n(r, 15, '1789'))} in the ledger"
    ),
    "IBAN with wrong check digits": lambda r: f"IBAN {_iban_break(_iban_number(r))}",
    "SSN never issued": lambda r: (
        f"{r.choice(['000', '666', '9' + _n(r, 2)])}-{_n(r, 2)}-{_n(r, 4)} in the test data"
    ),
    "serial number": lambda r: f"Serial number {_n(r, 3)} {_n(r, 2)} {_n(r, 4)} on the label",
    "room and phone extension": lambda r: f"ext. {_n(r, 4)}, room {r.randint(100, 999)}",
    "nine digits, no context": lambda r: f"You have {_n(r, 9, '1234')} bonus points left.",
    "a counted sequence": _counted,
    "a count of things": lambda r: (
        f"we need 0{_n(r, 2, '123456789')} {_n(r, 3)} {_n(r, 4)} "
        f"{r.choice(['screws', 'bolts', 'pieces', 'units', 'pallets'])}"
    ),
}


def corpus(positives: int, negatives: int, seed: int = SEED) -> list[Sample]:
    """`positives` sentences with one labelled value each, `negatives` with none."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not secrets
    names = list(FORMATS)
    weights = [FORMATS[name][2] for name in names]
    samples: list[Sample] = []
    for _ in range(positives):
        name = rng.choices(names, weights)[0]
        kind, make, _ = FORMATS[name]
        value = make(rng)
        before, after = rng.choice(FORMAT_TEMPLATES.get(name, TEMPLATES[kind])).split("{}")
        samples.append(
            (before + value + after, [(len(before), len(before) + len(value), kind)], name)
        )
    negative_names = sorted(NEGATIVES)
    for index in range(negatives):
        name = negative_names[index % len(negative_names)]
        samples.append((NEGATIVES[name](rng), [], f"negative: {name}"))
    rng.shuffle(samples)
    return samples


def evaluate(detect: Callable[[str], list[Span]], samples: list[Sample]) -> dict[str, object]:
    found_by_kind: Counter[str] = Counter()
    correct_by_kind: Counter[str] = Counter()
    labelled: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    by_format: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    false_positives: Counter[str] = Counter()
    for text, truth, name in samples:
        findings = detect(text)
        for start, end, kind in findings:
            found_by_kind[kind] += 1
            if any(k == kind and start < te and ts < end for ts, te, k in truth):
                correct_by_kind[kind] += 1
            else:
                false_positives[name] += 1
        for ts, te, kind in truth:
            labelled[kind] += 1
            hit = any(k == kind and s <= ts and te <= e for s, e, k in findings)
            covered[kind] += hit
            by_format[name][0] += hit
            by_format[name][1] += 1

    def ratio(numerator: int, denominator: int) -> float:
        return round(numerator / denominator, 3) if denominator else 1.0

    return {
        "recall": ratio(sum(covered.values()), sum(labelled.values())),
        "precision": ratio(sum(correct_by_kind.values()), sum(found_by_kind.values())),
        "by_kind": {
            kind: {
                "recall": ratio(covered[kind], labelled[kind]),
                "precision": ratio(correct_by_kind[kind], found_by_kind[kind]),
                "labelled": labelled[kind],
            }
            for kind in KINDS
        },
        "recall_by_format": {name: ratio(*counts) for name, counts in sorted(by_format.items())},
        "false_positives_by_source": dict(false_positives.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--positives", type=int, default=1500)
    parser.add_argument("--negatives", type=int, default=1000)
    parser.add_argument("--no-presidio", action="store_true", help="skip the baseline")
    args = parser.parse_args()
    samples = corpus(args.positives, args.negatives)
    report: dict[str, object] = {
        "samples": {"positives": args.positives, "hard_negatives": args.negatives},
        "ramparts": evaluate(ours, samples),
    }
    if not args.no_presidio:
        report["presidio_patterns"] = evaluate(presidio(), samples)
    print_report(report, as_json=args.json)


if __name__ == "__main__":
    main()
