"""A person signs in to the demo in a real browser (Debian's Chromium) with password + TOTP."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import httpx
import pyotp
import pytest
from playwright.sync_api import Page, sync_playwright

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.conftest import free_port
from tests.e2e.harness import CHROMIUM_ARGS, Demo, Watched, axe, enter_credentials
from tests.identity.helpers import pkce_pair, provision, register_client

pytestmark = pytest.mark.browser


def test_demo_user_signs_in_with_totp_in_a_browser(page: Page, demo: Demo) -> None:
    """Landing page, "Sign in", password, TOTP: the browser lands on the app's start page,
    signed in with a second factor, and nothing on the way was blocked or missing."""
    buyer = demo.user("buyer@acme.test")
    watched = Watched(page)
    icons: list[str] = []  # without one, the browser asks for /favicon.ico: a 404
    page.goto("/")
    page.wait_for_load_state("networkidle")
    icons += page.eval_on_selector_all("link[rel=icon]", "links => links.map(l => l.href)")
    page.get_by_role("link", name="Sign in").click()
    page.wait_for_url(f"{demo.base}/login")
    page.wait_for_load_state("networkidle")
    icons += page.eval_on_selector_all("link[rel=icon]", "links => links.map(l => l.href)")
    assert len(icons) == 2
    assert all(httpx.get(icon).status_code == 200 for icon in icons)
    # One organisation field serves both the password and the SSO sign-in.
    assert page.get_by_label("Organisation").count() == 1
    axe(page)
    enter_credentials(page, buyer)
    page.wait_for_url(f"{demo.base}/app", timeout=15_000)
    assert page.get_by_role("banner").get_by_text(buyer.username, exact=True).is_visible()
    assert "with a second factor" in (page.locator("main .lead").text_content() or "")
    watched.check()  # the strict CSP did not have to block anything; nothing was missing


def test_a_third_party_client_on_another_origin_gets_its_code(
    chromium: str,
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
) -> None:
    """The strict CSP (form-action) must still let the login complete towards the client."""
    account = provision(urls, kms)
    client_origin = f"http://localhost:{free_port()}"
    register_client(urls, kms, "third-party", f"{client_origin}/cb")
    server = serve_app()
    _, challenge = pkce_pair()
    authorize = f"{str(server.base_url).rstrip('/')}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "third-party",
            "redirect_uri": f"{client_origin}/cb",
            "scope": "openid",
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    arrived: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        blocked: list[str] = []
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.route(
            f"{client_origin}/**",
            lambda route: (
                arrived.append(route.request.url),
                route.fulfill(status=200, body="client"),
            ),
        )
        page.goto(authorize)
        login = "form[action='/login']"
        page.fill(f"{login} input[name=tenant]", account.tenant)
        page.fill(f"{login} input[name=username]", account.username)
        page.fill(f"{login} input[name=password]", account.password)
        page.click(f"{login} button[type=submit]:not([formaction])")
        page.wait_for_selector("input[name=otp]")
        assert account.totp_secret is not None
        page.fill("input[name=otp]", pyotp.TOTP(account.totp_secret).now())
        page.click("form button[type=submit]")
        page.wait_for_url(f"{client_origin}/cb*", timeout=15_000)
        browser.close()
    assert blocked == []
    assert arrived
    assert "code=" in arrived[0]
    assert "state=xyz" in arrived[0]
