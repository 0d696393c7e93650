"""A person signs in to the demo in a real browser (Debian's Chromium) with password + TOTP."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pyotp
import pytest
from playwright.sync_api import sync_playwright

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.conftest import cli_env, free_port
from tests.identity.helpers import pkce_pair, provision, register_client
from tests.test_cli import run, running

CHROMIUM = "/usr/bin/chromium"
# The flags this machine needs: no sandbox as root, and no background calls to a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed: apt-get install chromium")
    return CHROMIUM


def test_demo_user_signs_in_with_totp_in_a_browser(tmp_path: Path, chromium: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cli_env(tmp_path)
    with running("demo", "--port", str(port), env=env, url=f"{base}/healthz"):
        report = json.loads(
            run("seed-demo", "--json", env={**env, "RAMPARTS_PUBLIC_URL": base}).stdout
        )
        buyer = next(u for u in report["users"] if u["username"] == "buyer@acme.test")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            blocked: list[str] = []
            page.on(
                "console",
                lambda message: (
                    blocked.append(message.text)
                    if "Content Security Policy" in message.text
                    else None
                ),
            )
            failed: list[str] = []  # every resource a page asked for must exist
            page.on(
                "response",
                lambda response: (
                    failed.append(f"{response.status} {response.url}")
                    if response.status >= 400
                    else None
                ),
            )
            icons: list[str] = []  # without one, the browser asks for /favicon.ico: a 404
            page.goto(base + "/")
            page.wait_for_load_state("networkidle")
            icons += page.eval_on_selector_all("link[rel=icon]", "links => links.map(l => l.href)")
            page.click("#sign-in")
            page.wait_for_url(f"{base}/login")
            page.wait_for_load_state("networkidle")
            icons += page.eval_on_selector_all("link[rel=icon]", "links => links.map(l => l.href)")
            assert len(icons) == 2
            assert all(httpx.get(icon).status_code == 200 for icon in icons)
            # One organisation field serves both the password and the SSO sign-in.
            assert page.get_by_label("Organisation").count() == 1
            login = "form[action='/login']"
            page.fill(f"{login} input[name=tenant]", "acme")
            page.fill(f"{login} input[name=username]", buyer["username"])
            page.fill(f"{login} input[name=password]", buyer["password"])
            page.click(f"{login} button[type=submit]:not([formaction])")
            page.wait_for_url(f"{base}/login/mfa")
            page.fill("input[name=otp]", pyotp.TOTP(buyer["totp_secret"]).now())
            page.click("form button[type=submit]")
            page.wait_for_selector("#status[data-user]", timeout=15_000)
            status = page.text_content("#status") or ""
            browser.close()
    assert "Signed in: buyer" in status
    assert "pwd+otp+mfa" in status
    assert blocked == []  # the strict CSP did not have to block anything
    assert failed == []


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
