"""The first-party web client's pages. All logic is in static JS (the CSP forbids inline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from ramparts.routes import Exempt, declares

__all__ = ["WEB_CLIENT_ID", "router", "web_client_redirect_uri"]

WEB_CLIENT_ID = "ramparts-web"
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(tags=["pages"], include_in_schema=False)


def web_client_redirect_uri(public_url: str) -> str:
    return f"{public_url}/app/callback"


@router.get("/", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
@router.get("/app/callback", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def app_page(request: Request) -> HTMLResponse:
    public_url = request.app.state.identity.issuer
    return templates.TemplateResponse(
        request,
        "app.html",
        {"client_id": WEB_CLIENT_ID, "redirect_uri": web_client_redirect_uri(public_url)},
    )
