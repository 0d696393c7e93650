"""The web app in a real browser (Debian's Chromium), on a running `ramparts demo`: the landing
page, signing in and out, and the pages that refuse; each page is watched for errors (console,
failed requests, CSP) and checked with axe-core under its own strict CSP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.e2e.harness import Demo, Watched, axe, sign_in

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]
BUYER = "buyer@acme.test"
# Each test signs in as its own buyer: a user's TOTP code is good once, so signing one user in
# again and again would wait for the authenticator's next step (30 s) each time.
SIGNING_OUT, LOST, REFUSED = "buyer2@acme.test", "buyer@globex.test", "buyer2@globex.test"


def _path(page: Page) -> str:
    return urlsplit(page.url).path


def test_the_landing_page_says_what_the_demo_is(page: Page, shot: Shot) -> None:
    watched = Watched(page)
    page.goto("/")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", level=1).count() == 1
    assert page.get_by_role("link", name="Sign in").get_attribute("href") == "/app/login"
    axe(page)
    assert shot(page, "landing").stat().st_size > 0
    watched.check()


def test_axe_runs_under_the_strict_csp_and_can_fail(page: Page) -> None:
    """The harness's own check: axe-core runs on our CSP-protected page and reports a
    violation planted there (an image without a text alternative)."""
    watched = Watched(page)
    page.goto("/")
    page.evaluate(
        "() => document.querySelector('main').append(Object.assign("
        "document.createElement('img'), {src: '/static/favicon.svg'}))"
    )
    with pytest.raises(AssertionError, match="image-alt"):
        axe(page)
    watched.check()


def test_a_buyer_signs_in_and_lands_on_the_start_page(page: Page, demo: Demo, shot: Shot) -> None:
    buyer = demo.user(BUYER)
    watched = Watched(page)
    sign_in(page, buyer)
    page.wait_for_load_state("networkidle")
    assert _path(page) == "/app"
    top = page.get_by_role("banner")
    assert top.get_by_text(buyer.username, exact=True).is_visible()
    assert top.get_by_text("buyer", exact=True).is_visible()
    assert page.get_by_role("heading", level=1).text_content() == f"Hello, {buyer.username}"
    assert "with a second factor" in (page.locator("main .lead").text_content() or "")
    assert page.get_by_role("navigation", name="Main").is_visible()
    axe(page)
    shot(page, "start")
    watched.check()


def test_signing_out_ends_the_session(page: Page, demo: Demo, shot: Shot) -> None:
    watched = Watched(page)
    sign_in(page, demo.user(SIGNING_OUT))
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("link", name="Sign in").is_visible()
    assert page.get_by_role("button", name="Sign out").count() == 0
    shot(page, "signed-out")
    # The session is gone on the server too: the start page asks to sign in again.
    page.goto("/app")
    page.wait_for_url(lambda url: urlsplit(url).path == "/login")
    watched.check()


def test_an_unknown_app_page_is_a_human_404(page: Page, demo: Demo, shot: Shot) -> None:
    watched = Watched(page, allow=["404 /app/no-such-page"])
    sign_in(page, demo.user(LOST))
    answer = page.goto("/app/no-such-page")
    assert answer is not None
    assert answer.status == 404
    assert "text/html" in answer.headers["content-type"]
    assert page.get_by_role("heading", level=1).text_content() == "Not found"
    assert page.get_by_role("link", name="Back to the start page").get_attribute("href") == "/app"
    # Still inside the app: the layout knows who is signed in.
    assert page.get_by_role("banner").get_by_text(LOST, exact=True).is_visible()
    axe(page)
    shot(page, "not-found")
    watched.check()
    assert watched.allowed == ["404 /app/no-such-page"]


def test_a_refused_form_is_a_human_error_page(page: Page, demo: Demo, shot: Shot) -> None:
    """A form whose CSRF token is not the session's (as a stale tab's would be) is refused
    with a page that says what happened and what to do, and nothing changes: the session
    lives on."""
    watched = Watched(page, allow=["403 /app/logout"])
    sign_in(page, demo.user(REFUSED))
    page.locator("form[action='/app/logout'] input[name=csrf]").evaluate(
        "field => { field.value = 'stale'; }"
    )
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", level=1).text_content() == "This form has expired"
    assert "nothing was changed" in (page.locator("main").text_content() or "")
    assert "Error 403" in (page.locator("main").text_content() or "")
    axe(page)
    shot(page, "refused-form")
    page.get_by_role("link", name="Back to the start page").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/app")
    assert page.get_by_role("banner").get_by_text(REFUSED, exact=True).is_visible()
    watched.check()
    assert watched.allowed == ["403 /app/logout"]
