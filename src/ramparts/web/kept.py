"""Values a page keeps for its user across a redirect, in short-lived sealed cookies.

Sealed under the server's key and bound to the user and their session (through the session's
CSRF token, derived from its own secret): a value may hold the user's own data (an IBAN they
typed), which no other user of the browser, no script, and no later session may open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response

from ramparts.identity.views.dependencies import IdentityHttp
from ramparts.web.page import Page

__all__ = ["Kept", "fits"]

#: What a value may be, as JSON, to fit its sealed cookie (a browser keeps 4 KB per cookie).
COOKIE_CHARS = 2600


def fits(value: dict[str, Any]) -> bool:
    """Whether `value` fits a cookie once sealed (JSON, in the six-character escapes it
    writes for every non-ASCII character)."""
    return len(json.dumps(value)) <= COOKIE_CHARS


def _identity(page: Page) -> IdentityHttp:
    identity: IdentityHttp = page.request.app.state.identity
    return identity


@dataclass(frozen=True)
class Kept:
    """A value kept for the user in a sealed cookie: opened only for them, for a while."""

    cookie: str
    seconds: int

    def _context(self, page: Page) -> str:
        # Bound to the session too (its CSRF token is derived from the session's own secret):
        # the value dies with the session, so no copy of the cookie opens after sign-out.
        return f"web {self.cookie} {page.viewer.user_id} {page.session.csrf}"

    def opened(self, page: Page) -> dict[str, Any] | None:
        sealed = page.request.cookies.get(self.cookie)
        return _identity(page).flows.open(sealed, self._context(page)) if sealed else None

    def keep(self, page: Page, response: Response, value: dict[str, Any]) -> None:
        response.set_cookie(
            self.cookie,
            _identity(page).flows.seal(value, self._context(page)),
            max_age=self.seconds,
            path="/",
            secure=page.kit.cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def forget(self, page: Page, response: Response) -> None:
        response.delete_cookie(
            self.cookie, path="/", secure=page.kit.cookie_secure, httponly=True, samesite="strict"
        )
