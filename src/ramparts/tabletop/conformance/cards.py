"""PAY-1 on a running instance: no route takes a card number, none is stored, the API's own
description names no card field, and the payment page leaves card entry to the PSP.

Every operation the OpenAPI document lists that takes a body is sent test card numbers of
several networks (plain, spaced, dashed, with a security code, as a JSON number, as a key,
nested), as JSON and as a form, by a signed-in person; every listed read gets one in its
query, and a path one in a segment. Each must be refused, and the database, searched as its
owner afterwards, must hold none of the numbers in any table, in any spelling."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql

from ramparts.tabletop.conformance.answers import problem_type, said
from ramparts.tabletop.target import ApiSession, Target

__all__ = [
    "CARDS",
    "PaymentPage",
    "Sweep",
    "card_column",
    "card_fields",
    "owner_views",
    "read_payment_page",
    "samples",
    "stored_card_numbers",
    "sweep_routes",
]

#: The networks' published test numbers (Luhn-valid, never a real card).
CARDS = {
    "visa": "4242424242424242",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "diners": "3056930009020004",
    "jcb": "3566002020360505",
    "unionpay": "6200000000000005",
}
REFUSED = "card-number-refused"
#: The PSP's signed deliveries: a body is read only once its signature holds, so an
#: unsigned card number is refused there as an unsigned delivery.
SIGNED_PATHS = frozenset({"/webhooks/psp"})
SIGNATURE_REFUSED = "signature-refused"
_BODY_METHODS = ("post", "put", "patch", "delete")
_PARAMETER = re.compile(r"\{[^}]+\}")
_CARD_FIELD = re.compile(
    r"card.?(number|num|no)$|^(pan|cvc|cvv|cvc2|cvv2|cardnumber)$|security.?code"
    r"|^exp(iry|iration)?.?(month|year|date)$",
    re.IGNORECASE,
)


def spellings(number: str) -> list[str]:
    """How a card number is written: whole, in groups of four with spaces or dashes, and
    followed by its security code."""
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    return [number, " ".join(groups), "-".join(groups), f"{number} 123"]


def _bodies() -> Iterator[tuple[str, Any]]:
    """(what, JSON body) pairs: every network, written every way, at several depths."""
    for network, number in CARDS.items():
        for index, written in enumerate(spellings(number)):
            place: Any = [
                {"card_number": written},
                {"note": {"text": f"my card is {written}"}},
                {"items": [{"description": written}]},
                {written: "a key"},
            ][index]
            yield f"{network} ({['whole', 'spaced', 'dashed', 'with its code'][index]})", place
        yield f"{network} (a JSON number)", {"amount": int(number)}


@dataclass
class Sweep:
    """What the routes answered: `refused` lines, and what any route `accepted`."""

    sent: int = 0
    refused: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    def expect(self, answer: httpx.Response, what: str, kind: str = REFUSED) -> None:
        self.sent += 1
        line = said(answer, what)
        if answer.status_code == 400 and problem_type(answer) == kind:
            self.refused.append(line)
        else:
            self.accepted.append(line)


def samples(lines: list[str]) -> list[str]:
    """One line of each kind of request, for the evidence."""
    kinds = (" JSON ", " form", "?q=", "path segment", "/login form", "page form")
    return [
        next(line for line in lines if kind in line)
        for kind in kinds
        if any(kind in line for line in lines)
    ]


def _operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, operations in sorted(spec.get("paths", {}).items())
        for method in operations
        if method in {*_BODY_METHODS, "get"}
    ]


def sweep_routes(person: ApiSession, spec: dict[str, Any], page: httpx.Client) -> Sweep:
    """Send card numbers to every operation of `spec` as `person`, and to the sign-in form
    and the assistant's page form through `page` (a signed-in browser)."""
    sweep = Sweep()
    bodies = list(_bodies())
    numbers = [written for number in CARDS.values() for written in spellings(number)]
    any_id = str(uuid.uuid4())
    for index, (method, path) in enumerate(_operations(spec)):
        url = _PARAMETER.sub(any_id, path)
        if method == "get":
            written = numbers[index % len(numbers)]
            answer = person.get(url, params={"q": written})
            sweep.expect(answer, f"GET {path}?q=<card>")
            continue
        what, body = bodies[index % len(bodies)]
        kind = SIGNATURE_REFUSED if path in SIGNED_PATHS else REFUSED
        headers = {"Idempotency-Key": f"drill-{uuid.uuid4()}"}
        answer = person.request(method.upper(), url, json=body, headers=headers)
        sweep.expect(answer, f"{method.upper()} {path} JSON {what}", kind)
        form = {"text": numbers[(index * 7) % len(numbers)]}
        answer = person.request(method.upper(), url, data=form, headers=headers)
        sweep.expect(answer, f"{method.upper()} {path} form", kind)
    for network, number in list(CARDS.items())[:3]:
        answer = person.get(f"/api/{number}")
        sweep.expect(answer, f"GET /api/<{network} card> (a path segment)")
    csrf = _csrf_of(page.get("/app"))
    answer = page.post("/login", data={"tenant": "x", "username": CARDS["amex"], "csrf": "x"})
    sweep.expect(answer, "POST /login form, the card as the username")
    answer = page.post(
        "/app/assistant",
        data={"csrf": csrf, "message": f"pay with {spellings(CARDS['visa'])[1]}", "back": "/app"},
    )
    sweep.expect(answer, "POST /app/assistant page form, the card in the message")
    return sweep


def _csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    return found.group(1) if found else ""


def card_fields(spec: dict[str, Any]) -> list[str]:
    """The properties and parameters of an OpenAPI document named like card data."""
    found: list[str] = []
    pending: list[tuple[str, Any]] = [("", spec)]
    while pending:
        where, node = pending.pop()
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                found += [f"{where}.properties.{n}" for n in properties if _CARD_FIELD.search(n)]
            if node.get("in") in {"query", "path", "header", "cookie"}:
                name = str(node.get("name", ""))
                if _CARD_FIELD.search(name):
                    found.append(f"{where} parameter {name}")
            pending.extend((f"{where}.{key}", value) for key, value in node.items())
        elif isinstance(node, list):
            pending.extend((f"{where}[{i}]", value) for i, value in enumerate(node))
    return sorted(found)


def card_column(name: str) -> bool:
    """Whether a column or field named `name` would hold card data."""
    return _CARD_FIELD.search(name) is not None


def _patterns() -> list[str]:
    """What a stored card number looks like in a row's text: its digits, possibly separated
    by a space or dash, or hex-encoded as `bytea` shows ASCII."""
    patterns = []
    for number in CARDS.values():
        patterns.append("[ -]?".join(number))
        patterns.append("".join(f"3{digit}" for digit in number))
    return patterns


def owner_views(target: Target) -> Iterator[psycopg.Connection[Any]]:
    """The database as its owner sees every row: once when the owner is not held to
    row-level security (a superuser, BYPASSRLS), else once per tenant of the credentials
    (in a transaction of that tenant)."""
    with target.owner() as owner:
        sees_all = owner.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        tenants: list[str | None] = (
            [None] if sees_all and sees_all[0] else [str(t["id"]) for t in target.report["tenants"]]
        )
        for tenant in tenants:
            with owner.transaction():
                if tenant is not None:
                    owner.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                yield owner


def stored_card_numbers(target: Target) -> tuple[list[str], int]:
    """The tables whose rows hold one of `CARDS` (any spelling), searched as the owner
    (`owner_views`); and how many tables were searched."""
    pattern = "|".join(_patterns())
    found: set[str] = set()
    tables: list[tuple[str, str]] = []
    for conn in owner_views(target):
        tables = [
            (row[0], row[1])
            for row in conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
            )
        ]
        for schema, table in tables:
            query = sql.SQL("SELECT 1 FROM {} AS t WHERE t::text ~ %s LIMIT 1").format(
                sql.Identifier(schema, table)
            )
            if conn.execute(query, (pattern,)).fetchone() is not None:
                found.add(f"{schema}.{table}")
    return sorted(found), len(tables)


@dataclass(frozen=True)
class PaymentPage:
    """What the payment page is made of, as a browser gets it."""

    status: int
    scripts: tuple[str, ...]
    #: form fields inside the page's payment section (the PSP's element mounts there)
    payment_fields: tuple[str, ...]
    csp: dict[str, tuple[str, ...]]
    other_csp: dict[str, tuple[str, ...]]

    def psp_origins(self) -> set[str]:
        """The origins the page's policy adds to the strict one everyone else gets."""
        added: set[str] = set()
        for directive in ("script-src", "frame-src", "connect-src"):
            added |= set(self.csp.get(directive, ())) - set(self.other_csp.get(directive, ()))
        return added


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.fields: list[str] = []
        self._depth = 0  # > 0 inside the payment section

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values.get("src") or "(inline)")
        if tag == "section" and values.get("id") == "pay":
            self._depth = 1
        elif self._depth and tag == "section":
            self._depth += 1
        if self._depth and tag in {"input", "textarea", "select"}:
            self.fields.append(f"{tag} {values.get('name') or values.get('id') or ''}".strip())

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == "section":
            self._depth -= 1


def _policy(header: str | None) -> dict[str, tuple[str, ...]]:
    policy: dict[str, tuple[str, ...]] = {}
    for directive in (header or "").split(";"):
        name, *sources = directive.split()
        if directive.strip():
            policy[name] = tuple(sources)
    return policy


def read_payment_page(browser: httpx.Client, payment_id: str) -> PaymentPage:
    """The payment page of `payment_id` and, to compare, the start page's policy."""
    page = browser.get(f"/pay/{payment_id}")
    parser = _PageParser()
    parser.feed(page.text)
    other = browser.get("/app")
    return PaymentPage(
        status=page.status_code,
        scripts=tuple(parser.scripts),
        payment_fields=tuple(parser.fields),
        csp=_policy(page.headers.get("content-security-policy")),
        other_csp=_policy(other.headers.get("content-security-policy")),
    )


def same_origin(script: str, base_url: str) -> bool:
    """Whether a script's `src` is the instance's own (a path, or its own origin)."""
    if script == "(inline)":
        return False
    where = urlsplit(script)
    return not where.netloc or f"{where.scheme}://{where.netloc}" == base_url
