"""The identity server's own HTML pages (sign-in steps, errors, sign-out confirmation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from ramparts.headers import FORM_ACTION_HEADER

__all__ = ["page"]

templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")


def page(
    request: Request,
    name: str,
    status: int = 200,
    *,
    leads_to: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a template. `leads_to`: the client address this page's form ends up at
    (the CSP's form-action must allow its origin, or the browser stops the redirect)."""
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if leads_to is not None:
        parts = urlsplit(leads_to)
        response.headers[FORM_ACTION_HEADER] = f"{parts.scheme}://{parts.netloc}"
    return response
