"""A person sets up their second factors in a real browser: the TOTP enrolment at first
sign-in (its QR code drawn on the server, nothing fetched), then a passkey from the account
page, made by Chromium's own WebAuthn stack with a virtual authenticator (the DevTools
protocol). Both pages pass axe-core under the strict CSP."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
from playwright.sync_api import sync_playwright

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.roles import BUYER
from tests.e2e.harness import CHROMIUM_ARGS, Watched, axe
from tests.identity.helpers import provision
from tests.web.sessions_helpers import web_app

pytestmark = pytest.mark.browser


def test_totp_enrolment_then_a_passkey_from_the_account_page(
    chromium: str,
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # WebAuthn needs a host name for its relying party: the server is `localhost`.
    server = web_app(serve_app, urls, kms, host="localhost")
    base = str(server.base_url).rstrip("/")
    person = provision(urls, kms, roles=(BUYER,), with_totp=False)
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=base)
        page = context.new_page()
        devtools = context.new_cdp_session(page)
        devtools.send("WebAuthn.enable")
        authenticator = devtools.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )["authenticatorId"]
        watched = Watched(page)
        page.goto("/")
        page.get_by_role("link", name="Sign in").click()
        login = "form[action='/login']"
        page.fill(f"{login} input[name=tenant]", person.tenant)
        page.fill(f"{login} input[name=username]", person.username)
        page.fill(f"{login} input[name=password]", person.password)
        page.click(f"{login} button[type=submit]:not([formaction])")
        page.wait_for_url(lambda url: urlsplit(url).path == "/login/enroll")
        page.wait_for_load_state("networkidle")
        axe(page)
        assert page.locator("figure.qr svg").count() == 1
        secret = page.locator("figure.qr code").inner_text().strip()
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        page.screenshot(path=shots / "enrolment.png", full_page=True)
        page.get_by_label("Six-digit code").fill(pyotp.TOTP(secret).now())
        page.get_by_role("button", name="Confirm").click()
        # A first sign-in shows the recovery codes once, then goes on to the app.
        page.wait_for_url(lambda url: urlsplit(url).path in ("/app", "/login/recovery"))
        if urlsplit(page.url).path == "/login/recovery":
            axe(page)
            page.get_by_role("button").first.click()
            page.wait_for_url(lambda url: urlsplit(url).path == "/app")
        watched.check()

        watched = Watched(page)
        page.goto("/app/account")
        page.wait_for_load_state("networkidle")
        axe(page)
        page.get_by_label("Name for this passkey").fill("work laptop")
        page.get_by_role("button", name="Create a passkey").click()
        status = page.locator("#passkey-status")
        status.filter(has_text="added").wait_for(timeout=15_000)
        assert "work laptop" in status.inner_text()
        page.screenshot(path=shots / "account-passkey.png", full_page=True)
        # The key the server accepted lives in the browser's authenticator, for our site.
        held = devtools.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
        assert [c["rpId"] for c in held["credentials"]] == ["localhost"]
        watched.check()
        browser.close()
    assert Path(shots / "enrolment.png").stat().st_size > 0
