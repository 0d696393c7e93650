"""Request rules (PLT-3): what the edge refuses before any route sees a request, and how each
refusal is counted.

Every rule is a named limit; a request past one is answered with its own problem type, whose
detail names the rule and the limit and never echoes what was sent (it could be a secret, or
an attack string meant for a log viewer). Each refusal adds one to
`ramparts_request_refusals_total{rule}`, which the alert rules watch (`deploy/alerts.yml`).

The limits are constants, not settings: every legitimate request of every route fits them with
room to spare (the largest bodies of the served apps, such as a receipt's text or an order's
line items, are held lower by their schemas), so a deployment has no reason to move them, and
one that could would only weaken them. The body size is the exception
(`RAMPARTS_MAX_BODY_BYTES`): uploads differ between deployments.

The checks on the request's head cost one pass over its headers and one over its URL; the JSON
rules ride on the walk `ramparts.web.bodies` already makes over the parsed document.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import parse_qsl

from starlette.types import Scope

from ramparts.metrics import REQUEST_REFUSALS
from ramparts.problems import Problem, ProblemType

__all__ = [
    "IDENTIFIER_HEADERS",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_JSON_ARRAY_ITEMS",
    "MAX_JSON_DEPTH",
    "MAX_JSON_KEYS",
    "MAX_JSON_STRING_CHARS",
    "MAX_URL_BYTES",
    "Rule",
    "check_form_field",
    "check_head",
    "check_identifiers",
    "query_pairs",
    "refuse",
]

#: Nesting of objects and arrays: the deepest legitimate body (an app's line items) is 3.
MAX_JSON_DEPTH = 32
#: Members of one object: the widest legitimate object has about a dozen.
MAX_JSON_KEYS = 256
#: Characters in one string or key: the longest legitimate one, an app's receipt text, is
#: held to 20 000 by its schema; this leaves room and refuses a string the size of the whole
#: body before any schema, model or log sees it.
MAX_JSON_STRING_CHARS = 65_536
#: Items in one array: an app's line items and a bulk delete's ids are held to 100.
MAX_JSON_ARRAY_ITEMS = 1_000
#: Header lines: a browser sends about 20, proxies add a handful.
MAX_HEADERS = 64
#: Names and values of all headers together, in bytes (Uvicorn's own limit on the whole head
#: is 16 KiB; this one answers in our words, whatever server runs the app).
MAX_HEADER_BYTES = 8_192
#: The path and query as sent (percent-encoded): the longest legitimate one, a list of records
#: by 100 ids, is under 4 KiB; RFC 9110 asks servers to take 8000 octets.
MAX_URL_BYTES = 8_192
#: Headers whose values are identifiers: stored, compared and logged as they are, so they hold
#: printable characters only (a CR, LF or NUL in one would forge a log line or cut a key).
IDENTIFIER_HEADERS = frozenset({b"idempotency-key"})
#: What a form value may not hold: the C0 and C1 controls and DEL, but for a textarea's tab
#: and line breaks. Format characters (an emoji sequence's joiner, the marks of right-to-left
#: writing) are ordinary text there, as in a JSON string.
_FORM_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Rule(StrEnum):
    """Each request rule: the `rule` label of the counter."""

    BODY_SIZE = "body_size"
    JSON_DEPTH = "json_depth"
    JSON_KEYS = "json_keys"
    JSON_STRING_LENGTH = "json_string_length"
    JSON_ARRAY_LENGTH = "json_array_length"
    FORM_FIELDS = "form_fields"
    HEADER_COUNT = "header_count"
    HEADER_SIZE = "header_size"
    URL_LENGTH = "url_length"
    METHOD = "method"
    CONTROL_CHARACTER = "control_character"


def refuse(
    rule: Rule,
    status: int,
    problem_type: ProblemType,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
) -> Problem:
    """The problem that answers a request past `rule`, counted as it is made."""
    REQUEST_REFUSALS.labels(rule=rule.value).inc()
    return Problem(status, problem_type, detail, headers=headers)


def check_head(scope: Scope) -> None:
    """Refuse a URL or a set of headers past its limit, or an identifier header holding a
    character that is not printable."""
    url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
        scope.get("query_string", b"")
    )
    if url_bytes > MAX_URL_BYTES:
        raise refuse(
            Rule.URL_LENGTH,
            414,
            ProblemType.URL_TOO_LONG,
            f"url_length: the path and query are at most {MAX_URL_BYTES} bytes",
        )
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS:
        raise refuse(
            Rule.HEADER_COUNT,
            431,
            ProblemType.TOO_MANY_HEADERS,
            f"header_count: a request has at most {MAX_HEADERS} headers",
        )
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        # Values are bytes as sent: Latin-1 maps each byte to one character, so C0 and C1
        # controls and DEL are not printable.
        if name in IDENTIFIER_HEADERS and not value.decode("latin-1").isprintable():
            raise _control_character(f"header {name.decode('latin-1')}")
    if size > MAX_HEADER_BYTES:
        raise refuse(
            Rule.HEADER_SIZE,
            431,
            ProblemType.HEADERS_TOO_LARGE,
            f"header_size: the headers hold at most {MAX_HEADER_BYTES} bytes",
        )


def query_pairs(query_string: bytes) -> list[tuple[str, str]]:
    """The query's parameters, percent-decoded (as UTF-8), parsed once for every rule."""
    if not query_string:
        return []
    return parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)


def check_identifiers(path: str, query: list[tuple[str, str]]) -> None:
    """Refuse a (decoded) path, query parameter name or value that holds a NUL, a control
    character or another character that is not printable (format characters such as the
    bidirectional overrides, line separators, unassigned code points): these are the ids a
    route looks up, logs and stores."""
    if not path.isprintable():
        raise _control_character("the path")
    for name, value in query:
        if not name.isprintable():
            raise _control_character("a query parameter name")
        if not value.isprintable():
            # The name is shown only when it is printable itself, and shortened.
            raise _control_character(f"query parameter {name[:40]!r}")


def check_form_field(name: str, value: str) -> None:
    """Refuse a (decoded) form field whose name is not printable, or whose value holds a
    control character other than a textarea's: a form's fields are ids as much as a query's
    (an organisation and a username at sign-in, a client id and a code at OAuth's token
    endpoint)."""
    if not name.isprintable():
        raise _control_character("a form field name")
    if _FORM_CONTROL.search(value):
        raise _control_character(f"form field {name[:40]!r}")


def _control_character(where: str) -> Problem:
    return refuse(
        Rule.CONTROL_CHARACTER,
        400,
        ProblemType.CONTROL_CHARACTER,
        f"control_character: {where} holds a control or other non-printable character",
    )
