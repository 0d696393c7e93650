"""Signing in to the web app (the server-run code flow and its session cookie) over HTTP."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.web.pages import WEB_CLIENT_ID
from tests.identity.helpers import Account, log_in, register_client

__all__ = ["authorized_web", "page_csrf", "sign_in_web", "web_app"]


def web_app(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    app_hook: Callable[..., None] | None = None,
    **overrides: object,
) -> httpx.Client:
    """A live app whose first-party web client is registered for its own address."""
    client = serve_app(app_hook, **overrides)
    base = str(client.base_url).rstrip("/")
    register_client(urls, kms, WEB_CLIENT_ID, f"{base}/app/callback")
    return client


def sign_in_web(
    browser: httpx.Client, account: Account, next_path: str = "/app", otp: str | None = None
) -> httpx.Response:
    """Sign in through the web app as a browser would; returns the page it lands on. `otp`:
    a TOTP code other than the current one (each is accepted once)."""
    callback = browser.get(authorized_web(browser, account, next_path, otp))
    assert callback.status_code == 303, callback.text
    return browser.get(callback.headers["location"])


def authorized_web(
    browser: httpx.Client, account: Account, next_path: str = "/app", otp: str | None = None
) -> str:
    """Start the web app's sign-in and pass the login pages; the callback URL (code and state)
    the browser is sent to, not followed yet."""
    started = browser.get("/app/login", params={"next": next_path})
    assert started.status_code == 303, started.text
    done = log_in(browser, started.headers["location"], account, otp=otp)
    assert done.status_code in (302, 303), done.text
    location: str = done.headers["location"]
    return location


def page_csrf(page: httpx.Response) -> str:
    """The CSRF token a signed-in page carries for its forms and scripts."""
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)
