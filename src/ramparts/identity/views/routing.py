"""Registering one endpoint for the two methods the OIDC specifications give it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from ramparts.routes import Exempt, declares

__all__ = ["get_and_post"]


def get_and_post(
    router: APIRouter, path: str, endpoint: Callable[..., Any], exempt: Exempt
) -> None:
    """One endpoint at `path` for GET and POST; the schema documents the GET."""
    router.add_api_route(path, endpoint, methods=["GET"], openapi_extra=declares(exempt))
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        operation_id=f"{endpoint.__name__}_post",
        openapi_extra=declares(exempt),
        include_in_schema=False,
    )
