"""The OpenAPI document at /openapi.json: what FastAPI generates, plus what every route shares.

Routes declare their own successes (and the few refusals only they give, such as a deposit's
409). What every route can answer besides comes from layers in front of the handler, so it is
documented here once, by class, rather than route by route: the edge refuses malformed,
oversized and wrongly typed requests (400, 413, 414, 415, 431), the permission gate refuses a
missing token (401) and a denied action (403), validation answers 422, limits answer 429. A
route behind a token may find nothing where the request points (404: an id in its path, query
or body, such as a conversation), and a state-changing one may meet a resource in the wrong
state or a reused Idempotency-Key (409).

Refusals are RFC 9457 problem+json, except on a page for people (a route whose success is
`text/html`): there a refusal is a page, and a step of a sign-in flow may redirect (303).
Protocol routes that answer in another standard's words (the token endpoint's RFC 6749 errors)
document those responses themselves, and what a route documents is never overwritten.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ramparts.problems import PROBLEM_JSON
from ramparts.routes import ACTION_KEY, Exempt

__all__ = ["BEARER_SCHEME", "PROBLEM_SCHEMA", "install_openapi"]

BEARER_SCHEME = "bearer"
PROBLEM_SCHEMA = "Problem"
_HTML = "text/html"
_METHODS_WITH_BODY = frozenset({"post", "put", "patch"})
_UNSAFE = frozenset({"post", "put", "patch", "delete"})
#: The edge's refusals, whatever the route (`RequestRulesMiddleware`, the CORS and host checks;
#: 414 and 431 are the request rules' limits on the URL and the headers, PLT-3).
_EDGE = (400, 403, 413, 414, 431)
#: FastAPI's own validation schemas: its 422 is answered as a problem instead.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `type` is stable per kind of error.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}


def _shared_responses(method: str, operation: dict[str, Any]) -> dict[int, tuple[str, ...]]:
    """The statuses an operation can answer besides its own, each with its media types."""
    statuses = {*_EDGE, 422, 429}
    if method in _METHODS_WITH_BODY:
        statuses.add(415)
    if not _public(operation):
        statuses |= {401, 404}
        if method in _UNSAFE:
            statuses.add(409)
    elif any(p.get("in") == "path" for p in operation.get("parameters", [])):
        statuses.add(404)
    shared: dict[int, tuple[str, ...]] = dict.fromkeys(statuses, (PROBLEM_JSON,))
    if _answers_html(operation):
        # The page's own refusals (an expired sign-in, a forged form) are pages; the edge's
        # and validation's stay problems. A sign-in step sends the browser on (no body).
        for status in (400, 403, 429):
            shared[status] = (_HTML, PROBLEM_JSON)
        shared[303] = ()
    return shared


def _public(operation: dict[str, Any]) -> bool:
    return operation.get(ACTION_KEY) in (Exempt.PUBLIC, Exempt.PAGE)


def _answers_html(operation: dict[str, Any]) -> bool:
    ok = operation.get("responses", {}).get("200", {})
    return _HTML in ok.get("content", {})


def _content(media: str) -> dict[str, Any]:
    if media == PROBLEM_JSON:
        return {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}}
    return {"schema": {"type": "string"}}


def _response(status: int, media: tuple[str, ...]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if media:
        response["content"] = {each: _content(each) for each in media}
    return response


def _complete(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas[PROBLEM_SCHEMA] = _PROBLEM
    components["securitySchemes"] = {
        BEARER_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if _FASTAPI_VALIDATION[0] in str(responses.get("422", "")):
                del responses["422"]
            shared = _shared_responses(method, operation)
            for status, media in sorted(shared.items()):
                responses.setdefault(str(status), _response(status, media))
            for status, response in responses.items():
                # A refusal a route names without its body (a deposit's 409) is a problem too.
                if status.isdigit() and int(status) >= 400 and not response.get("content"):
                    response["content"] = {PROBLEM_JSON: _content(PROBLEM_JSON)}
            operation["security"] = [] if _public(operation) else [{BEARER_SCHEME: []}]
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json, built once on first request."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(
                get_openapi(title=app.title, version=app.version, routes=app.routes)
            )
        return app.openapi_schema

    # FastAPI's documented way to extend the document; mypy sees a method being replaced.
    app.openapi = openapi  # type: ignore[method-assign]
