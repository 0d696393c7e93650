"""What a JSON or form body must be, checked once at the edge, refused in our own words.

The parsers' messages name the runtime ("use sys.set_int_max_str_digits()", "decode using
utf-8-sig"), so none is passed on: each refusal says, in the product's terms, what is wrong
and where. Malformed JSON is a 400. Strings may hold neither NUL (PostgreSQL text cannot) nor
unpaired surrogates (not encodable as UTF-8): well-formed but unusable, a 422, so a body that
passes here can be stored and logged as it is, on every route. A document past a request rule
(nesting depth, keys per object, string or array length: `ramparts.web.rules`) is a 422 of
that rule's own type, found on the same walk.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

from ramparts.problems import Problem, ProblemType
from ramparts.web.rules import (
    MAX_JSON_ARRAY_ITEMS,
    MAX_JSON_DEPTH,
    MAX_JSON_KEYS,
    MAX_JSON_STRING_CHARS,
    Rule,
    check_form_field,
    refuse,
)

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
    if detail == _NUL:  # a control character, in any body: counted as one
        return refuse(Rule.CONTROL_CHARACTER, 422, ProblemType.INVALID_REQUEST, detail)
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


_NUL = "a string holds a NUL character"


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return _NUL
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "a string holds an unpaired surrogate (\\ud800-\\udfff)"
    return None


def _check_document(document: Any, *, check_characters: bool) -> None:
    """Refuse a document past a request rule (`ramparts.web.rules`: depth, keys per object,
    string and array length) or, when `check_characters`, with an unusable key or string.
    One pass, a level at a time (no recursion: the decoder allows deeper nesting than the
    stack would), so a container's depth is the number of levels above it; keys go to the
    level below with the values, where only strings are, so they add no depth."""
    level = [document]
    depth = 0  # of the containers on this level, less one
    while level:
        below: list[Any] = []
        for node in level:
            kind = type(node)  # the decoder and our hooks make exactly these types
            if kind is str:
                if len(node) > MAX_JSON_STRING_CHARS:
                    raise _string_too_long()
                if check_characters and (problem := _string_problem(node)):
                    raise _unusable(problem)
            elif kind is dict or kind is list:
                if depth == MAX_JSON_DEPTH:
                    raise _too_deep()
                if kind is dict:
                    if len(node) > MAX_JSON_KEYS:
                        raise _too_many_keys()
                    below.extend(node)
                    below.extend(node.values())
                else:
                    _check_array(node)
                    below.extend(node)
        level = below
        depth += 1


def _string_too_long() -> Problem:
    return refuse(
        Rule.JSON_STRING_LENGTH,
        422,
        ProblemType.JSON_STRING_TOO_LONG,
        f"json_string_length: a string or name has at most {MAX_JSON_STRING_CHARS} characters",
    )


def _too_many_keys() -> Problem:
    return refuse(
        Rule.JSON_KEYS,
        422,
        ProblemType.JSON_TOO_MANY_KEYS,
        f"json_keys: an object has at most {MAX_JSON_KEYS} members",
    )


def _check_array(node: list[Any]) -> None:
    if len(node) > MAX_JSON_ARRAY_ITEMS:
        raise refuse(
            Rule.JSON_ARRAY_LENGTH,
            422,
            ProblemType.JSON_ARRAY_TOO_LONG,
            f"json_array_length: an array has at most {MAX_JSON_ARRAY_ITEMS} items",
        )


def _too_deep() -> Problem:
    return refuse(
        Rule.JSON_DEPTH,
        422,
        ProblemType.JSON_TOO_DEEP,
        f"json_depth: objects and arrays nest at most {MAX_JSON_DEPTH} deep",
    )


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
    except RecursionError:  # far deeper than the rule allows
        raise _too_deep() from None
    except ValueError:  # no other is expected; never pass on a parser's own words
        raise _malformed_json("not valid JSON") from None
    # The decoder refuses a raw control character in a string, and UTF-8 text holds no
    # surrogate: in ASCII text without a \u escape, no string can hold a NUL or a surrogate.
    _check_document(document, check_characters=not text.isascii() or "\\u" in text)
    return document


def check_form(text: str) -> None:
    """Refuse a URL-encoded form with too many fields, a NUL in a name or value, or another
    control character (`ramparts.web.rules.check_form_field`)."""
    if text.count("&") + text.count(";") + 1 > MAX_FORM_FIELDS:
        # The form's twin of `json_keys`, counted as a rule (its answer predates the rules).
        raise refuse(
            Rule.FORM_FIELDS,
            400,
            ProblemType.MALFORMED_BODY,
            f"a form has at most {MAX_FORM_FIELDS} fields",
        )
    for name, value in parse_qsl(text, keep_blank_values=True):
        problem = _string_problem(name) or _string_problem(value)
        if problem:
            raise _unusable(problem)
        check_form_field(name, value)
