"""Registering one endpoint for the two methods the OIDC specifications give it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from ramparts.routes import Exempt, declares

__all__ = ["get_and_post"]


def get_and_post(
    router: APIRouter,
    path: str,
    endpoint: Callable[..., Any],
    exempt: Exempt,
    *,
    response_class: type[Response] = JSONResponse,
) -> None:
    """One endpoint at `path` for GET and POST, both documented (a client may use either)."""
    router.add_api_route(
        path,
        endpoint,
        methods=["GET"],
        response_class=response_class,
        openapi_extra=declares(exempt),
    )
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        response_class=response_class,
        operation_id=f"{endpoint.__name__}_post",
        openapi_extra=declares(exempt),
    )
