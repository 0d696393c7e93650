"""A person signs in to the demo in a real browser (Debian's Chromium) with password + TOTP."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import cli_env, free_port
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
            page.goto(base + "/")
            page.click("#sign-in")
            page.wait_for_url(f"{base}/login")
            login = "form[action='/login']"
            page.fill(f"{login} input[name=tenant]", "acme")
            page.fill(f"{login} input[name=username]", buyer["username"])
            page.fill(f"{login} input[name=password]", buyer["password"])
            page.click(f"{login} button[type=submit]")
            page.wait_for_url(f"{base}/login/mfa")
            page.fill("input[name=otp]", pyotp.TOTP(buyer["totp_secret"]).now())
            page.click("form button[type=submit]")
            page.wait_for_selector("#status[data-user]", timeout=15_000)
            status = page.text_content("#status") or ""
            browser.close()
    assert "Signed in: buyer" in status
    assert "pwd+otp+mfa" in status
    assert blocked == []  # the strict CSP did not have to block anything
