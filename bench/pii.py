"""PII masking benchmark (see README.md): precision, recall and throughput of the gateway's
detectors, and the masker's own throughput (credential refusal and tokens included), on a
labelled corpus of mixed business text, beside Presidio's pattern recognizers
(credit card, email, IBAN, US SSN, phone) on the same corpus in the same run.

The corpus is generated from a fixed seed: business sentences with cards (valid Luhn), IBANs
(valid check digits), SSNs, emails and phone numbers at known places, and look-alikes that are
not PII (order numbers, invalid cards, dates, amounts, version strings). Its labels are exact
by construction.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_report

from ramparts.ai.masking import MASKED_KINDS, Masker
from ramparts.detectors import find_sensitive

SEED = 20261129
KINDS = ("CARD", "IBAN", "SSN", "EMAIL", "PHONE")
PRESIDIO_KINDS = {
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
}
Span = tuple[int, int, str]


def luhn_complete(digits: str) -> str:
    """`digits` with the Luhn check digit that makes them a valid card number."""
    total = 0
    for index, char in enumerate(reversed(digits + "0")):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return digits + str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("37", 15)])
    body = prefix + "".join(rng.choices("0123456789", k=length - len(prefix) - 1))
    number = luhn_complete(body)
    if length == 16 and rng.random() < 0.5:
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    return number


def _iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("FR", 23), ("GB", 18), ("NL", 14), ("ES", 20)])
    if country == "GB":
        bban = "".join(rng.choices(string.ascii_uppercase, k=4)) + "".join(
            rng.choices("0123456789", k=14)
        )
    elif country == "NL":
        bban = "".join(rng.choices(string.ascii_uppercase, k=4)) + "".join(
            rng.choices("0123456789", k=10)
        )
    else:
        bban = "".join(rng.choices("0123456789", k=length))
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def _ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _email(rng: random.Random) -> str:
    first = rng.choice(["anna", "li", "marco", "fatima", "john.smith", "o.brien", "k-tanaka"])
    domain = rng.choice(["example.com", "acme.co.uk", "globex.de", "mail.example.org"])
    return f"{first}{rng.randint(1, 99)}@{domain}"


def _phone(rng: random.Random) -> str:
    return rng.choice(
        [
            f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}",
            f"+1 (212) 555-{rng.randint(1000, 9999)}",
            f"+49 30 {rng.randint(100000, 999999)}",
            f"(415) 555-{rng.randint(1000, 9999)}",
            f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} "
            f"{rng.randint(10, 99)}",
        ]
    )


MAKERS: dict[str, Callable[[random.Random], str]] = {
    "CARD": _card,
    "IBAN": _iban,
    "SSN": _ssn,
    "EMAIL": _email,
    "PHONE": _phone,
}
TEMPLATES = {
    "CARD": ["Please charge the deposit to card {} before Friday.", "Card on file: {}."],
    "IBAN": ["Pay the balance to IBAN {} within 30 days.", "Our bank account is {}."],
    "SSN": ["Contractor tax id (SSN) {} is on the W-9.", "Employee SSN {} for payroll."],
    "EMAIL": ["Send the signed quote to {}.", "Questions? Write to {} any time."],
    "PHONE": ["Call our sales desk on {} to confirm.", "Delivery contact: {}."],
}
NOISE = [
    "Quote Q-{n} covers {q} ergonomic chairs at {p}.00 EUR each, delivery in week {w}.",
    "Order number {n}-{q}-{w} ships on 2026-{w:02d}-1{q}.",
    "Invoice INV{n}{q} totals {p},{q}50.00 USD including VAT of 19%.",
    "Firmware version {q}.{w}.{n} fixes the reported issue; ticket #{n}{p}.",
    "Reference 4111 1111 1111 1112 is not a valid card (fails Luhn).",
    "Meeting at 10:30 in room {q}{w}, building {n}.",
    "The lot of {p} units arrived on {w}/{q}/2026 at dock {n}.",
    "Call-off number {p}-{n}-{w} refers to framework agreement {q}.",
]


def corpus(size: int, seed: int = SEED) -> tuple[str, list[Span]]:
    """About `size` characters of text, and the exact (start, end, kind) of every PII value."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not secrets
    parts: list[str] = []
    spans: list[Span] = []
    length = 0
    while length < size:
        if rng.random() < 0.35:
            kind = rng.choice(KINDS)
            value = MAKERS[kind](rng)
            before, after = rng.choice(TEMPLATES[kind]).split("{}")
            start = length + len(before)
            spans.append((start, start + len(value), kind))
            sentence = before + value + after
        else:
            sentence = rng.choice(NOISE).format(
                n=rng.randint(100, 99999),
                q=rng.randint(1, 9),
                w=rng.randint(1, 52),
                p=rng.randint(10, 9999),
            )
        parts.append(sentence + " ")
        length += len(sentence) + 1
    return "".join(parts), spans


def score(found: Iterable[Span], truth: list[Span]) -> dict[str, float]:
    """A finding counts when its kind matches and it overlaps a labelled value."""
    found = list(found)
    hits = sum(1 for s, e, k in found if any(k == tk and s < te and ts < e for ts, te, tk in truth))
    caught = sum(
        1 for ts, te, tk in truth if any(k == tk and s < te and ts < e for s, e, k in found)
    )
    precision = hits / len(found) if found else 1.0
    recall = caught / len(truth) if truth else 1.0
    return {"precision": round(precision, 3), "recall": round(recall, 3)}


def ours(text: str) -> list[Span]:
    kinds = {k.value for k in MASKED_KINDS}
    return [(f.start, f.end, f.kind.value) for f in find_sensitive(text) if f.kind.value in kinds]


def presidio() -> Callable[[str], list[Span]]:
    import tldextract  # noqa: PLC0415 - only for the baseline
    from presidio_analyzer.predefined_recognizers import (  # noqa: PLC0415
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # Presidio's email check would fetch the public suffix list over the network: use the
    # snapshot tldextract ships, as nothing here downloads at run time.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    recognizers = [
        CreditCardRecognizer(),
        EmailRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        PhoneRecognizer(supported_regions=("US", "GB", "DE", "FR")),
    ]

    def analyze(text: str) -> list[Span]:
        found = []
        for recognizer in recognizers:
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                kind = PRESIDIO_KINDS.get(result.entity_type)
                if kind is not None and result.score >= 0.4:
                    found.append((result.start, result.end, kind))
        return found

    return analyze


def measure(detect: Callable[[str], list[Span]], text: str, truth: list[Span]) -> dict[str, float]:
    chunks = [text[i : i + 2000] for i in range(0, len(text), 2000)]  # message-sized pieces
    found: list[Span] = []
    started = time.perf_counter()
    for index, chunk in enumerate(chunks):
        found += [(s + index * 2000, e + index * 2000, k) for s, e, k in detect(chunk)]
    seconds = time.perf_counter() - started
    # Values cut by a chunk edge are not counted against either side.
    edges = {i * 2000 for i in range(1, len(chunks))}
    whole = [t for t in truth if not any(t[0] < edge < t[1] for edge in edges)]
    per_kind = {
        kind: score([f for f in found if f[2] == kind], [t for t in whole if t[2] == kind])
        for kind in KINDS
    }
    return {
        **score(found, whole),
        "mb_per_s": round(len(text.encode()) / seconds / 1e6, 2),
        "by_kind": per_kind,  # type: ignore[dict-item]
    }


def masking_rate(text: str) -> float:
    """What the gateway really does to a message: refuse credentials, then replace every
    finding with its conversation token (`Masker.mask`), in message-sized pieces."""
    masker = Masker()
    chunks = [text[i : i + 2000] for i in range(0, len(text), 2000)]
    started = time.perf_counter()
    for chunk in chunks:
        masker.mask(chunk)
    return round(len(text.encode()) / (time.perf_counter() - started) / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size", type=int, default=1_000_000, help="corpus characters")
    args = parser.parse_args()
    text, truth = corpus(args.size)
    report = {
        "corpus_chars": len(text),
        "labelled_values": dict(Counter(kind for *_, kind in truth)),
        "ramparts": measure(ours, text, truth),
        "ramparts_masking_mb_per_s": masking_rate(text),
        "presidio_patterns": measure(presidio(), text, truth),
    }
    report["goal_1_mb_per_s"] = report["ramparts_masking_mb_per_s"] >= 1.0
    print_report(report, as_json=args.json)


if __name__ == "__main__":
    main()
