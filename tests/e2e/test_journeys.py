"""Every role's journey through the web app, in Chromium, on one `ramparts demo`: a Buyer asks
for a quote, a Seller answers with a proposal the assistant drafts, the Buyer accepts, Finance
charges the deposit, the Buyer pays it on the PSP's page with 3-D Secure, the verified webhook
confirms it, and Finance's refund and disbursement run only once a second Finance user
approves them; the Admin reads the users and the verified audit trail. And the refusals: a
Buyer never sees Finance's pages or tools, and another tenant's quote is a 404 page.

Each test goes on from the one before (the same quote); every page is watched (console errors,
failed requests, CSP) and checked with axe-core, and the main ones are kept as screenshots.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ramparts.db.engine import libpq
from tests.e2e.harness import CHROMIUM_ARGS, Demo, Watched, axe, sign_in, type_card

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]
THREE_D_SECURE = "4000002760003184"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class People:
    """One signed-in browser context per demo user, kept for the module (each signs in once:
    a TOTP code is good once)."""

    def __init__(self, browser: Browser, demo: Demo) -> None:
        self._browser = browser
        self._demo = demo
        self._pages: dict[str, Page] = {}

    def __call__(self, username: str) -> Page:
        if username not in self._pages:
            context = self._browser.new_context(base_url=self._demo.base)
            page = context.new_page()
            sign_in(page, self._demo.user(username))
            self._pages[username] = page
        return self._pages[username]


@pytest.fixture(scope="module")
def people(chromium: str, demo: Demo) -> Iterator[People]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield People(browser, demo)
        browser.close()


@pytest.fixture(scope="module")
def story() -> dict[str, Any]:
    """What one step leaves for the next: the quote's address, the payment's."""
    return {}


def visit(page: Page, path: str, shot: Shot | None = None, name: str = "", **allow: str) -> None:
    """Open `path`, wait for it to settle, check it with axe (and keep a screenshot)."""
    watched = Watched(page, allow=allow.values())
    page.goto(path)
    page.wait_for_load_state("networkidle")
    checked(page, watched, shot, name)


def checked(page: Page, watched: Watched, shot: Shot | None = None, name: str = "") -> None:
    page.wait_for_load_state("networkidle")
    axe(page)
    if shot is not None:
        shot(page, name)
    watched.check()


def submit(page: Page, button: str, *, within: Any = None, allow: tuple[str, ...] = ()) -> None:
    """Press a form's button and wait for the page the form leads to, checked."""
    watched = Watched(page, allow=allow)
    scope = within if within is not None else page
    with page.expect_navigation():
        scope.get_by_role("button", name=button).click()
    checked(page, watched)


def test_a_buyer_requests_a_quote(people: People, story: dict[str, Any], shot: Shot) -> None:
    buyer = people("buyer@acme.test")
    nav = buyer.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Request a quote").is_visible()
    assert nav.get_by_role("link", name="Payments").count() == 0  # Finance's
    visit(buyer, "/app/quotes", shot, "buyer-quotes")
    visit(buyer, "/app/quotes/new", shot, "buyer-new")
    buyer.get_by_label("Title", exact=True).fill("50 laptops for the Lyon office")
    buyer.get_by_role("textbox", name=re.compile("^Description")).fill(
        "Delivered to Lyon by March."
    )
    buyer.get_by_label("Item 1 description", exact=True).fill("Laptop, 14 inch")
    buyer.get_by_label("Item 1 quantity", exact=True).fill("50")
    buyer.get_by_label("Item 1 unit price", exact=True).fill("1,200.00")  # refused: a comma
    submit(buyer, "Send the request", allow=("422 /app/quotes/new",))
    assert buyer.get_by_role("alert").count() + buyer.locator("[aria-invalid=true]").count() > 0
    assert urlsplit(buyer.url).path == "/app/quotes/new"
    buyer.get_by_label("Item 1 unit price", exact=True).fill("1200.00")
    submit(buyer, "Send the request")
    path = urlsplit(buyer.url).path
    assert re.fullmatch(rf"/app/quotes/{UUID}", path), path
    assert "60,000.00 EUR" in buyer.content()
    story["quote"] = path
    shot(buyer, "buyer-requested")


def test_a_seller_has_the_assistant_draft_a_proposal_and_sends_it(
    people: People, story: dict[str, Any], shot: Shot
) -> None:
    seller = people("seller@acme.test")
    visit(seller, "/app/quotes", shot, "seller-quotes")
    assert seller.get_by_role("link", name="50 laptops for the Lyon office").is_visible()
    visit(seller, story["quote"])
    submit(seller, "Draft with the assistant")
    proposal = seller.get_by_role("textbox", name=re.compile("^Proposal"))
    drafted = proposal.input_value()
    assert "Proposal for: 50 laptops for the Lyon office" in drafted
    assert "60000.00 EUR" in drafted or "60,000.00 EUR" in drafted
    assert "draft_proposal" in seller.content()  # what the assistant did, shown
    shot(seller, "seller-draft")
    proposal.fill(drafted + "\nDelivery to Lyon included.")
    submit(seller, "Send proposal")
    assert "Delivery to Lyon included." in seller.content()
    shot(seller, "seller-sent")


def test_the_assistant_panel_shows_what_the_model_did(
    people: People, story: dict[str, Any], shot: Shot
) -> None:
    seller = people("seller@acme.test")
    visit(seller, "/app/quotes")
    panel = seller.get_by_role("complementary")
    quote_id = story["quote"].rsplit("/", 1)[1]
    panel.get_by_label("Your message").fill(f"get quote {quote_id}")
    watched = Watched(seller)
    panel.get_by_role("button", name="Send").click()
    action = panel.get_by_role("region", name="Action 1: get_quote")
    action.wait_for(timeout=20_000)
    checked(seller, watched, shot, "assistant-panel")
    text = action.inner_text()
    assert "Done" in text
    assert "Trusted" in text  # where the argument came from: the user's own words


def test_the_buyer_accepts_the_proposal(people: People, story: dict[str, Any], shot: Shot) -> None:
    buyer = people("buyer@acme.test")
    visit(buyer, story["quote"])
    assert "Delivery to Lyon included." in buyer.content()
    submit(buyer, "Accept")
    assert "Finance has not asked for the deposit yet" in buyer.content()
    shot(buyer, "buyer-accepted")


def test_finance_charges_the_deposit(people: People, story: dict[str, Any], shot: Shot) -> None:
    finance = people("finance@acme.test")
    visit(finance, "/app/finance", shot, "finance-payments")
    quote_id = story["quote"].rsplit("/", 1)[1]
    form = finance.locator(f"form[action='/app/finance/quotes/{quote_id}/deposit']")
    submit(finance, "Charge deposit", within=form)
    assert "18,000.00 EUR" in finance.content()  # 30 % of 60,000.00
    shot(finance, "finance-charged")


def test_the_buyer_pays_the_deposit_with_3d_secure(
    people: People, story: dict[str, Any], shot: Shot
) -> None:
    buyer = people("buyer@acme.test")
    visit(buyer, story["quote"])
    watched = Watched(buyer)
    with buyer.expect_navigation():
        buyer.get_by_role("link", name="Pay the deposit").click()
    story["payment"] = urlsplit(buyer.url).path.rsplit("/", 1)[1]
    try:
        buyer.wait_for_selector("#pay-status[data-state=ready]", timeout=20_000)
    except PlaywrightTimeout:
        shot(buyer, "pay-not-ready")
        raise AssertionError(
            f"{buyer.url}: {buyer.locator('main').inner_text()} {watched.problems}"
        ) from None
    axe(buyer)
    type_card(buyer, THREE_D_SECURE)
    buyer.get_by_role("button", name="Pay").click()
    challenge = buyer.get_by_role("button", name="Complete authentication")
    challenge.wait_for(timeout=20_000)
    shot(buyer, "buyer-3ds")
    challenge.click()
    # Paid only once the worker has the PSP's verified webhook.
    buyer.wait_for_selector("#pay-status[data-state=paid]", timeout=60_000)
    shot(buyer, "buyer-paid")
    watched.check()
    visit(buyer, story["quote"])
    assert "Paid" in buyer.locator("main").inner_text()


def test_refund_and_disbursement_wait_for_a_second_finance_user(
    people: People, story: dict[str, Any], shot: Shot
) -> None:
    finance = people("finance@acme.test")
    visit(finance, "/app/finance")
    payment = story["payment"]
    refund = finance.locator(f"form[action='/app/finance/payments/{payment}/refund']")
    refund.get_by_label(re.compile("Refund amount")).fill("100.00")
    submit(finance, "Request a refund", within=refund)
    assert "second Finance user" in finance.content()
    quote_id = story["quote"].rsplit("/", 1)[1]
    disburse = finance.locator(f"form[action='/app/finance/quotes/{quote_id}/disbursement']")
    submit(finance, "Request disbursement", within=disburse)
    # The requester's own inbox: both wait for another person, with nothing to press.
    visit(finance, "/app/approvals", shot, "finance-own-requests")
    assert finance.get_by_text("Waiting for another person").count() == 2
    assert finance.get_by_role("button", name="Approve").count() == 0

    second = people("finance2@acme.test")
    visit(second, "/app/approvals", shot, "finance2-inbox")
    assert second.get_by_role("button", name="Approve").count() == 2
    for _ in range(2):
        submit(second, "Approve", within=second.locator("form[action$='/approve']").first)
    shot(second, "finance2-approved")
    assert second.get_by_role("button", name="Approve").count() == 0
    visit(finance, "/app/finance/ledger", shot, "finance-ledger")
    ledger = finance.content()
    assert re.search(r"\bre_\w+", ledger), "the refund is booked"
    assert re.search(r"\bpo_\w+", ledger), "the payout is booked"
    visit(finance, "/app/finance/reconciliation", shot, "finance-reconciliation")


def test_the_admin_reads_users_and_the_verified_audit_trail(people: People, shot: Shot) -> None:
    admin = people("admin@acme.test")
    visit(admin, "/app/admin", shot, "admin-users")
    assert "buyer@acme.test" in admin.content()
    assert "buyer@globex.test" not in admin.content()
    visit(admin, "/app/admin/audit", shot, "admin-audit")
    assert "Chain verified" in admin.content()
    visit(admin, "/app/admin/assistant", shot, "admin-assistant")


def test_a_buyer_never_reaches_finance_or_another_tenants_quote(
    people: People, demo: Demo, shot: Shot
) -> None:
    buyer = people("buyer@acme.test")
    tools = buyer.get_by_role("complementary").inner_text()
    assert "charge_deposit" not in tools
    assert "issue_refund" not in tools
    visit(buyer, "/app/finance", shot, "buyer-refused", refused="403 /app/finance")
    assert "permission" in buyer.content().lower()
    with psycopg.connect(libpq(demo.urls.owner)) as connection:
        (elsewhere,) = connection.execute(
            "SELECT q.id FROM quotes q JOIN tenants t ON t.id = q.tenant_id "
            "WHERE t.slug = 'globex' LIMIT 1"
        ).fetchone() or (None,)
    assert elsewhere is not None
    path = f"/app/quotes/{elsewhere}"
    visit(buyer, path, shot, "buyer-404", missing=f"404 {path}")
    assert buyer.get_by_role("heading", level=1).inner_text() == "Not found"


def test_the_pages_fit_a_phone(people: People, story: dict[str, Any], shot: Shot) -> None:
    """Responsive: on a 390 px wide screen no page is wider than the screen (a wide table
    scrolls inside the page's frame)."""
    finance = people("finance@acme.test")
    finance.set_viewport_size({"width": 390, "height": 800})
    try:
        for path in ("/app", "/app/quotes", story["quote"], "/app/finance", "/app/approvals"):
            visit(finance, path)
            wide = finance.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= 390, f"{path} is {wide} px wide"
        shot(finance, "phone")
    finally:
        finance.set_viewport_size({"width": 1280, "height": 720})
