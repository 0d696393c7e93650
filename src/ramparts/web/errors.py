"""Exception handlers that turn framework errors into problem+json."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ramparts.problems import Problem, problem_response

if TYPE_CHECKING:
    from starlette.types import ExceptionHandler

__all__ = ["install_error_handlers"]

_SLUGS = {404: "not-found", 405: "method-not-allowed"}


async def _problem(_: Request, exc: Problem) -> Response:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    status = HTTPStatus(exc.status_code)
    detail = exc.detail if exc.detail != status.phrase else None
    if exc.status_code == 404 and detail is None:
        detail = f"no resource at {request.url.path}"
    return problem_response(
        exc.status_code,
        _SLUGS.get(exc.status_code, "http-error"),
        status.phrase,
        detail,
        headers=exc.headers,
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
    # Location and message only: echoing the input could reflect secrets or PII.
    errors = [
        {"loc": [str(part) for part in error["loc"]], "msg": error["msg"]} for error in exc.errors()
    ]
    return problem_response(
        422,
        "invalid-request",
        "Invalid request",
        "the request does not match the schema",
        errors=errors,
    )


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types handlers as taking any Exception; each is registered for its own class.
    app.add_exception_handler(Problem, cast("ExceptionHandler", _problem))
    app.add_exception_handler(HTTPException, cast("ExceptionHandler", _http_error))
    app.add_exception_handler(RequestValidationError, cast("ExceptionHandler", _validation_error))
