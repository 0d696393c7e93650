"""What a JSON or form body must be, checked once at the edge, refused in our own words.

The parsers' messages name the runtime ("use sys.set_int_max_str_digits()", "decode using
utf-8-sig"), so none is passed on: each refusal says, in the product's terms, what is wrong
and where. Malformed JSON is a 400. Strings may hold neither NUL (PostgreSQL text cannot) nor
unpaired surrogates (not encodable as UTF-8): well-formed but unusable, a 422, so a body that
passes here can be stored and logged as it is, on every route.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from ramparts.problems import Problem, ProblemType

__all__ = ["MAX_FORM_FIELDS", "MAX_NUMBER_CHARS", "check_form", "check_json"]

#: Longer numbers are refused: no amount is that long, and converting a huge one is slow.
MAX_NUMBER_CHARS = 100
#: The most fields a form may have (Starlette's own limit, answered here in our words).
MAX_FORM_FIELDS = 1000

# The stdlib decoder's messages, in our words.
_JSON_ERRORS = {
    "Expecting value": "a value was expected",
    "Expecting ',' delimiter": "a comma was expected",
    "Expecting ':' delimiter": "a colon was expected",
    "Expecting property name enclosed in double quotes": "a name in double quotes was expected",
    "Unterminated string starting at": "a string is not closed",
    "Invalid control character at": "a string holds a control character; escape it",
    "Invalid \\escape": "a string holds an invalid escape",
    "Invalid \\uXXXX escape": "a string holds an invalid \\u escape",
    "Extra data": "more follows the JSON value",
}


class _RefusedError(ValueError):
    """Raised by our parser hooks, with a message fit for the client."""


def _malformed_json(detail: str) -> Problem:
    return Problem(400, ProblemType.MALFORMED_JSON, detail)


def _unusable(detail: str) -> Problem:
    return Problem(422, ProblemType.INVALID_REQUEST, detail)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # parsers disagree on which one wins
            raise _RefusedError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise _RefusedError(f"{name} is not valid JSON")


def _integer(digits: str) -> int:
    if len(digits) > MAX_NUMBER_CHARS:
        raise _RefusedError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    return int(digits)


def _number(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _RefusedError(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if not math.isfinite(value):  # 1e999 would quietly become Infinity
        raise _RefusedError("a number is too large")
    return value


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "a string holds a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a string holds an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _strings_problem(document: Any) -> str | None:
    """The first problem with a key or string anywhere in `document` (walked without
    recursion: the decoder allows deeper nesting than the stack would)."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            problem = _string_problem(node)
            if problem:
                return problem
        elif isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return None


def check_json(text: str) -> Any:
    """Refuse `text` unless it is one strict JSON document (see the module docstring); the
    document."""
    if text.startswith("\ufeff"):
        raise _malformed_json("the body starts with a byte order mark; send JSON without one")
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_int=_integer,
            parse_float=_number,
        )
    except json.JSONDecodeError as exc:
        what = _JSON_ERRORS.get(exc.msg, "not valid JSON")
        raise _malformed_json(f"{what} at line {exc.lineno} column {exc.colno}") from None
    except _RefusedError as exc:
        raise _malformed_json(str(exc)) from None
    except RecursionError:
        raise _malformed_json("nesting too deep") from None
    except ValueError:  # no other is expected; never pass on a parser's own words
        raise _malformed_json("not valid JSON") from None
    problem = _strings_problem(document)
    if problem:
        raise _unusable(problem)
    return document


def check_form(text: str) -> None:
    """Refuse a URL-encoded form with too many fields or a NUL in a name or value."""
    if text.count("&") + text.count(";") + 1 > MAX_FORM_FIELDS:
        raise Problem(
            400, ProblemType.MALFORMED_BODY, f"a form has at most {MAX_FORM_FIELDS} fields"
        )
    for name, value in parse_qsl(text, keep_blank_values=True):
        problem = _string_problem(name) or _string_problem(value)
        if problem:
            raise _unusable(problem)
