"""Exception handlers that turn framework errors into problem+json, in the product's words.

The frameworks' own messages name the runtime (Starlette's form parser, pydantic's "Input
should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:`..."), so
none is passed on: validation errors are described from their type and our schema's limits,
and a framework's HTTP error keeps only its status.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles

from ramparts.metrics import REQUEST_REFUSALS
from ramparts.problems import Problem, ProblemType, problem_response
from ramparts.web.rules import Rule

if TYPE_CHECKING:
    from starlette.types import ExceptionHandler, Scope

__all__ = [
    "allowed_methods",
    "describe",
    "http_error",
    "install_error_handlers",
    "validation_error",
]

_TYPES = {
    400: ProblemType.MALFORMED_BODY,
    404: ProblemType.NOT_FOUND,
    405: ProblemType.METHOD_NOT_ALLOWED,
}
# What the framework means when it raises these, said by us (its detail is its own wording).
_DETAILS = {400: "the body could not be read", 413: "the body is too large"}

# pydantic's error types, described in our words; `{name}` takes the error's context (the
# limits of our own schema, never the input).
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not an accepted field",
    "string_type": "must be a string",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "enum": "must be one of {expected}",
    "literal_error": "must be one of {expected}",
    "uuid_type": "must be a UUID",
    "uuid_parsing": "must be a UUID",
    "uuid_version": "must be a UUID",
    "datetime_type": "must be a date and time (ISO 8601)",
    "datetime_parsing": "must be a date and time (ISO 8601)",
    "datetime_from_date_parsing": "must be a date and time (ISO 8601)",
    "date_type": "must be a date (ISO 8601)",
    "date_parsing": "must be a date (ISO 8601)",
    "date_from_datetime_parsing": "must be a date (ISO 8601)",
    "timezone_aware": "must have a UTC offset",
    "none_required": "must be null",
    "json_invalid": "is not valid JSON",
}


def describe(error: Mapping[str, Any]) -> str:
    """One validation error in our words (an unknown kind: that the value is not valid)."""
    template = _MESSAGES.get(str(error.get("type")))
    if template is None:
        return "is not valid"
    context = {k: str(v) for k, v in (error.get("ctx") or {}).items()}
    try:
        return template.format(**context)
    except KeyError:  # a context this version of pydantic does not give
        return "is not valid"


def _location(error: Mapping[str, Any], body: Any) -> list[str]:
    """Where the error is, as the client wrote it: pydantic puts its own schema names in a
    location (`function-after[...]`, a union member's type), which are kept out by following
    the body itself; a missing field, the last part, is kept."""
    source, *path = error.get("loc") or ("body",)
    if source != "body":
        return [str(source), *(str(part) for part in path[:1])]
    kept = ["body"]
    node = body
    for index, part in enumerate(path):
        last = index == len(path) - 1
        in_mapping = isinstance(node, Mapping) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            node = node[part]
        elif not (last and error.get("type") == "missing"):
            break
        kept.append(str(part))
    return kept


async def _problem(_: Request, exc: Problem) -> Response:
    return exc.response()


def _endpoints(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, through included routers (FastAPI wraps them)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _endpoints(included.routes)
        else:
            yield route


def allowed_methods(routes: Iterable[BaseRoute], path: str) -> list[str]:
    """Every method some route accepts at `path` (Starlette's own 405 names one route's)."""
    scope: Scope = {"type": "http", "path": path, "root_path": "", "method": "", "headers": []}
    methods: set[str] = set()
    for route in _endpoints(routes):
        if isinstance(route, Route):
            accepts = route.methods or set()
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            accepts = {"GET", "HEAD"}
        else:
            continue
        if "GET" in accepts:  # answered as GET without content (`HeadMiddleware`)
            accepts = {*accepts, "HEAD"}
        if route.matches(scope)[0] is not Match.NONE:
            methods |= accepts
    return sorted(methods)


def _one_of(words: list[str]) -> str:
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


async def http_error(request: Request, exc: HTTPException) -> Response:
    headers = dict(exc.headers or {})
    detail = _DETAILS.get(exc.status_code)
    if exc.status_code == 404:
        detail = f"no resource at {request.url.path}"
    if exc.status_code == 405:  # the route's method allowlist, a request rule
        allowed = allowed_methods(request.app.router.routes, request.url.path)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here; use {_one_of(allowed)}"
        REQUEST_REFUSALS.labels(rule=Rule.METHOD.value).inc()
    return problem_response(
        exc.status_code,
        _TYPES.get(exc.status_code, ProblemType.HTTP_ERROR),
        detail,
        headers=headers or None,
    )


async def validation_error(_: Request, exc: RequestValidationError) -> Response:
    # Location and our description only: echoing the input could reflect secrets or PII.
    errors: list[dict[str, Any]] = []
    for error in exc.errors():
        entry = {"loc": _location(error, exc.body), "msg": describe(error)}
        if entry not in errors:
            errors.append(entry)
    return problem_response(
        422,
        ProblemType.INVALID_REQUEST,
        "the request does not match the schema",
        errors=errors,
    )


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types handlers as taking any Exception; each is registered for its own class.
    app.add_exception_handler(Problem, cast("ExceptionHandler", _problem))
    app.add_exception_handler(HTTPException, cast("ExceptionHandler", http_error))
    app.add_exception_handler(RequestValidationError, cast("ExceptionHandler", validation_error))
