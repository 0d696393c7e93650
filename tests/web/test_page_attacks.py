"""Attacks on the pages of issue 16 (the quote app's, Finance's, the admin's, the assistant
panel and the approvals inbox), against a live server and real PostgreSQL.

- Stored markup: every field a person or a model controls is shown as text, never as markup,
  on every page that shows it (quotes, proposals, the assistant's replies and tool arguments,
  approvals, the admin's user list).
- The panel's sealed cookies: they hold no more than a browser keeps, and die with the
  session that wrote them.
- Redirects: the panel goes back only to a page of ours; the pages' `notice`/`done` reflect
  nothing.
- Authorization: every page route requires the session (and a form, its CSRF token).
- Money: amounts are ASCII digits only (a look-alike digit is not a decimal point).
"""

from __future__ import annotations

import html
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from fastapi.dependencies.models import Dependant
from markupsafe import escape

from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.identity.models import ADMIN_ROLE
from ramparts.payments.sandbox import Sandbox
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.routes import ACTION_KEY, Exempt
from ramparts.web.app import create_app
from ramparts.web.page import posted, signed_in
from tests.ai.test_assistant import NEW_QUOTE, script, sign_in
from tests.identity.helpers import Account, next_code, provision
from tests.live import temporary_kms
from tests.payments.conftest import psp_kms, sandbox  # noqa: F401 - fixtures
from tests.quotes.money_world import World, make_web_world
from tests.test_routes import api_routes
from tests.web.sessions_helpers import page_csrf, sign_in_web, web_app

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
LINK = "javascript:alert(1)"
TEMPLATE = "{{7*7}}{% if 1 %}jinja{% endif %}"
# Right-to-left override, a zero-width joiner and full-width brackets.
UNICODE = "\u202e<svg/onload=alert(1)>\u200d\uff1cscript\uff1e"
PAYLOAD = f"{ATTRIBUTE}{SCRIPT}{TEMPLATE}{LINK}{UNICODE}"


def assert_inert(page: str) -> None:
    """No payload became markup or a link. (That a template expression stayed text is shown
    by finding the whole payload, `{{7*7}}` and all, in the page's text.)"""
    for markup in ("<script>alert", "<img src=x", "<svg/onload", "onerror=alert(1)>"):
        assert markup not in page, markup
    assert not re.search(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", page, re.I)


def shown(page: str) -> str:
    return html.unescape(page)


@pytest.fixture
def browsers() -> Iterator[Callable[[httpx.Client, Account], tuple[httpx.Client, str]]]:
    """Browsers of their own, signed in as an account on a server; closed after the test."""
    opened: list[httpx.Client] = []

    def open_as(server: httpx.Client, account: Account) -> tuple[httpx.Client, str]:
        browser = httpx.Client(base_url=server.base_url, timeout=60)
        opened.append(browser)
        home = sign_in_web(browser, account)
        assert home.status_code == 200, home.text
        return browser, page_csrf(home)

    yield open_as
    for browser in opened:
        browser.close()


Browsers = Callable[[httpx.Client, Account], tuple[httpx.Client, str]]


# --- stored markup ---------------------------------------------------------------------------


def test_markup_in_a_quote_and_its_proposal_is_text_on_every_page(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, browsers: Browsers
) -> None:
    server = web_app(serve_app, urls, kms)
    buyer_account = provision(urls, kms, roles=(BUYER,))
    tenant = buyer_account.tenant
    buyer, buyer_csrf = browsers(server, buyer_account)
    seller, seller_csrf = browsers(server, provision(urls, kms, roles=(SELLER,), tenant=tenant))
    finance, _ = browsers(server, provision(urls, kms, roles=(FINANCE,), tenant=tenant))

    created = buyer.post(
        "/app/quotes/new",
        data={
            "csrf": buyer_csrf,
            "title": PAYLOAD,
            "description": f"{PAYLOAD}\n</pre>{SCRIPT}",
            "currency": "EUR",
            "item-1-description": PAYLOAD[:200],
            "item-1-quantity": "2",
            "item-1-price": "10.00",
        },
    )
    assert created.status_code == 303, created.text
    quote = created.headers["location"].split("/")[3].split("?")[0]
    uuid.UUID(quote)

    # A refused form shows what was typed again: still as text.
    refused = buyer.post(
        "/app/quotes/new",
        data={"csrf": buyer_csrf, "title": PAYLOAD, "currency": "EUR", "item-1-price": PAYLOAD},
    )
    assert refused.status_code == 422
    assert_inert(refused.text)
    assert PAYLOAD in shown(refused.text)

    drafted = seller.post(f"/app/quotes/{quote}/draft", data={"csrf": seller_csrf})
    assert drafted.status_code == 200, drafted.text
    assert_inert(drafted.text)
    assert PAYLOAD in shown(drafted.text)  # the assistant's draft names the title, as text
    proposal = f"{PAYLOAD}\n</textarea>{SCRIPT}"
    too_long = seller.post(
        f"/app/quotes/{quote}/submit",
        data={"csrf": seller_csrf, "proposal": proposal + "x" * 10_001},
    )
    assert too_long.status_code == 422  # shown again in the textarea, which it cannot close
    assert_inert(too_long.text)
    assert "</textarea><script>" not in too_long.text
    sent = seller.post(
        f"/app/quotes/{quote}/submit", data={"csrf": seller_csrf, "proposal": proposal}
    )
    assert sent.status_code == 303, sent.text

    for browser in (buyer, seller, finance):
        for path in ("/app/quotes", f"/app/quotes/{quote}", "/app/quotes?status=submitted"):
            page = browser.get(path)
            assert page.status_code == 200, (path, page.text)
            assert_inert(page.text)
    offered = buyer.get(f"/app/quotes/{quote}")
    assert proposal in shown(offered.text)
    assert f"{PAYLOAD}\n</pre>{SCRIPT}" in shown(offered.text)
    assert f"<title>{escape(PAYLOAD)} · Ramparts</title>" in offered.text

    accepted = buyer.post(f"/app/quotes/{quote}/accept", data={"csrf": buyer_csrf})
    assert accepted.status_code == 303, accepted.text
    payments = finance.get("/app/finance")  # the accepted quote's title, to charge
    assert payments.status_code == 200, payments.text
    assert_inert(payments.text)
    assert PAYLOAD in shown(payments.text)


def test_markup_in_a_users_names_is_text_on_the_admin_and_approvals_pages(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, browsers: Browsers
) -> None:
    server = web_app(serve_app, urls, kms)
    admin = provision(urls, kms, roles=(ADMIN_ROLE,))
    colleague = provision(urls, kms, roles=(BUYER,), tenant=admin.tenant)
    with psycopg.connect(libpq(urls.owner)) as conn:  # names as a provisioning script set them
        conn.execute(
            "UPDATE users SET display_name = %s WHERE id = %s", (PAYLOAD, colleague.user_id)
        )
    browser, csrf = browsers(server, admin)
    page = browser.get("/app/admin")
    assert page.status_code == 200, page.text
    assert_inert(page.text)
    assert PAYLOAD in shown(page.text)

    # A kill-switch form with markup for a tool and a reason: refused or stored, never markup.
    switched = browser.post(
        "/app/admin/assistant/killswitch",
        data={"csrf": csrf, "engaged": "off", "tool": ATTRIBUTE, "reason": PAYLOAD},
    )
    assert switched.status_code in (303, 422), switched.text
    for path in ("/app/admin/assistant", "/app/admin/audit"):
        answer = browser.get(path)
        assert answer.status_code == 200, answer.text
        assert_inert(answer.text)
        assert f'<a href="{path}" aria-current="page">' in answer.text  # its own tab


# --- the assistant panel and approvals ---------------------------------------------------------


def _hostile_model(tmp_path: Path, poisoned: str) -> str:
    """A model that reads a quote, asks to create one whose fields are markup (held: it came
    after the vendor's text) and answers in markup."""
    return script(
        tmp_path,
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned}}]},
        {
            "tool_calls": [
                {
                    "name": "create_quote",
                    "arguments": {
                        **NEW_QUOTE,
                        "title": PAYLOAD,
                        "items": [
                            {"description": PAYLOAD[:200], "quantity": 1, "unit_price_minor": 1}
                        ],
                    },
                }
            ]
        },
        {"text": f"Done. {PAYLOAD} <a href='{LINK}'>click</a>"},
    )


def test_markup_from_the_model_is_text_in_the_panel_and_in_approvals(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path: Path,
    browsers: Browsers,
) -> None:
    setup = serve_app()
    buyer, headers = sign_in(setup, urls, kms, BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": PAYLOAD}, headers=headers
    ).json()
    server = web_app(serve_app, urls, kms, model=_hostile_model(tmp_path, poisoned["id"]))
    assert buyer.totp_secret is not None
    browser = httpx.Client(base_url=server.base_url, timeout=60)
    try:
        home = sign_in_web(browser, buyer, otp=next_code(buyer.totp_secret))
        csrf = page_csrf(home)
        message = f"What does quote {poisoned['id']} say? {PAYLOAD}"
        fragment = browser.post(
            "/app/assistant",
            data={"message": message},
            headers={"x-csrf-token": csrf, "x-assistant-fragment": "1"},
        )
        assert fragment.status_code == 200, fragment.text
        assert_inert(fragment.text)
        assert message in shown(fragment.text)
        assert "Waiting for approval" in fragment.text
        # The same exchange, kept in the sealed cookie and drawn on the next page.
        page = browser.get("/app")
        assert message in shown(page.text)
        assert_inert(page.text)
        own = browser.get("/app/approvals")
        assert_inert(own.text)
        assert "Waiting for another person" in own.text
    finally:
        browser.close()

    colleague, _ = browsers(server, provision(urls, kms, roles=(BUYER,), tenant=buyer.tenant))
    inbox = colleague.get("/app/approvals")
    assert inbox.status_code == 200, inbox.text
    assert_inert(inbox.text)
    assert "<code>create_quote</code>" in inbox.text
    approval = re.search(r'id="approval-([0-9a-f-]{36})"', inbox.text)
    assert approval
    decided = colleague.post(
        f"/app/approvals/{approval.group(1)}/approve", data={"csrf": page_csrf(inbox)}
    )
    assert decided.status_code == 303, decided.text
    result = colleague.get("/app/approvals")  # the result, with the created quote's fields
    assert "Approved: it ran." in result.text
    assert_inert(result.text)


def _set_cookie(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.split(";", 1)[0]
    return None


def test_the_panels_cookie_fits_a_browser_whatever_the_script_of_the_reply(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    """A browser keeps at most 4,096 bytes of a cookie's name and value and drops a larger
    one (and a proxy may refuse the response): a reply in Greek or Japanese is as long in
    characters as one in English, and six times longer as JSON escapes."""
    reply = "Καλημέρα 日本語の返事 " * 300
    server = web_app(serve_app, urls, kms, model=script(tmp_path, {"text": reply}))
    buyer = provision(urls, kms, roles=(BUYER,))
    home = sign_in_web(server, buyer)
    sent = server.post(
        "/app/assistant",
        data={"message": "Ελληνικά " * 200, "csrf": page_csrf(home), "back": "/app"},
    )
    assert sent.status_code == 303, sent.text
    cookie = _set_cookie(sent, "ramparts_assistant")
    assert cookie is not None
    assert len(cookie.encode()) <= 4096, len(cookie)
    page = server.get("/app")
    assert "Καλημέρα 日本語の返事" in page.text  # the start of the reply, kept


def test_the_panels_exchange_dies_with_the_session_that_kept_it(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    """The exchange may hold personal data: after sign-out it is not shown again, and a copy of
    the cookie opens in no later session (it is sealed for the session, not only the user)."""
    server = web_app(serve_app, urls, kms, model=script(tmp_path, {"text": "IBAN noted."}))
    buyer = provision(urls, kms, roles=(BUYER,))
    home = sign_in_web(server, buyer)
    secret_words = f"My IBAN is DE89 3704 0044 0532 0130 00 ({secrets.token_hex(4)})"
    sent = server.post(
        "/app/assistant", data={"message": secret_words, "csrf": page_csrf(home), "back": "/app"}
    )
    assert sent.status_code == 303, sent.text
    kept = _set_cookie(sent, "ramparts_assistant")
    assert kept is not None
    assert secret_words in server.get("/app").text
    out = server.post("/app/logout", data={"csrf": page_csrf(home)})
    assert out.status_code == 303
    assert buyer.totp_secret is not None
    again = sign_in_web(server, buyer, otp=next_code(buyer.totp_secret))
    assert again.status_code == 200
    name, value = kept.split("=", 1)
    server.cookies.set(name, value)  # even if the browser kept it
    assert secret_words not in server.get("/app").text


def test_the_panel_goes_back_to_its_own_page_and_never_to_another_site(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    server = web_app(serve_app, urls, kms, model=script(tmp_path, {"text": "ok"}))
    buyer = provision(urls, kms, roles=(BUYER,))
    home = sign_in_web(server, buyer)
    csrf = page_csrf(home)
    quotes = server.get("/app/quotes")
    back = re.search(r'name="back" value="([^"]*)"', quotes.text)
    assert back
    assert back.group(1) == "/app/quotes"  # without script, the panel returns here
    # A page drawn for a form's POST has no address to come back to: the start page.
    form = server.post("/app/quotes/new", data={"csrf": csrf, "title": "", "currency": "EUR"})
    assert form.status_code == 422
    assert 'name="back" value="/app"' in form.text
    for away in (
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "/\t/evil.example/",
        "https:evil.example",
        "https://evil.example/",
        "/%5Cevil.example",
        "javascript:alert(1)",
        "\u3002evil.example",
    ):
        sent = server.post("/app/assistant/new", data={"csrf": csrf, "back": away})
        assert sent.status_code == 303
        location = sent.headers["location"]
        # What a browser makes of it: backslashes are slashes, tabs and newlines vanish.
        read = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
        parts = urlsplit(read)
        assert location.startswith("/"), (away, location)
        assert not read.startswith("//"), (away, location)
        assert (parts.scheme, parts.netloc) == ("", ""), (away, location)


def test_the_pages_notices_reflect_nothing_a_link_carries(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, browsers: Browsers
) -> None:
    server = web_app(serve_app, urls, kms)
    account = provision(urls, kms, roles=(BUYER, FINANCE))
    browser, _ = browsers(server, account)
    quote = browser.post(
        "/app/api/quotes", json=NEW_QUOTE, headers={"x-csrf-token": page_csrf(browser.get("/app"))}
    ).json()["id"]
    # Bidirectional and other format characters in a query never reach a page: the edge
    # refuses them (400 control-character), echoing nothing.
    refused = browser.get(f"/app/quotes/{quote}?notice={PAYLOAD}")
    assert refused.status_code == 400, refused.status_code
    assert refused.json()["type"] == "urn:ramparts:problem:control-character"
    assert "alert(1)" not in refused.text
    # Without them the page itself must keep the rest of the payload inert.
    for path in (
        f"/app/quotes/{quote}?notice={PAYLOAD.replace(UNICODE, '')}",
        f"/app/quotes/{quote}?notice=created{SCRIPT}",
        f"/app/finance?done={SCRIPT[:20]}",
        "/app/quotes?status=<script>",
    ):
        page = browser.get(path)
        assert page.status_code in (200, 422), (path, page.status_code)
        assert_inert(page.text)
        assert "alert(1)" not in shown(page.text)


# --- authorization: every page needs its session --------------------------------------------

#: Pages anyone may open: they start or finish the sign-in, or say what Ramparts is.
PUBLIC_PAGES = {("GET", "/"), ("GET", "/app/login"), ("GET", "/app/callback")}


def _calls(dependant: Dependant) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


@pytest.mark.anyio
async def test_every_page_route_needs_the_session_and_every_form_its_csrf_token(
    urls: DatabaseUrls, tmp_path: Path
) -> None:
    database = Database(urls.app, pool_size=1)
    settings = Settings(home="/nonexistent", secret_key=secrets.token_urlsafe(32))  # type: ignore[arg-type]
    app = create_app(settings, database, temporary_kms(tmp_path))
    await database.dispose()
    pages = [
        route
        for route in api_routes(app.routes)
        if (route.openapi_extra or {}).get(ACTION_KEY) == Exempt.PAGE
    ]
    assert len(pages) > 20
    for route in pages:
        calls = _calls(route.dependant)
        for method in route.methods:
            if (method, route.path) in PUBLIC_PAGES:
                continue
            assert signed_in in calls, f"{method} {route.path} renders without a session"
            if method not in {"GET", "HEAD"} and not route.path.startswith("/app/api/"):
                assert posted in calls, f"{method} {route.path} acts without a CSRF token"


# --- money -------------------------------------------------------------------------------------


@pytest.fixture
def world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    sandbox: Sandbox,  # noqa: F811 - the fixture
) -> World:
    return make_web_world(serve_app, urls, psp_kms, sandbox)


@pytest.mark.parametrize(
    "typed",
    [
        "1\u06605",  # ARABIC-INDIC DIGIT ZERO: looks like a point ("1.5"), read as 105.00
        "\uff11\uff12",  # full-width digits
        "1\u0660",
        "-5",
        "5e2",
        "1_000",
        "0",
        "0.00",
        " ",
        "99999999999999",
    ],
)
def test_a_refund_amount_is_ascii_digits_only_and_nothing_is_requested_otherwise(
    world: World,
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    typed: str,
) -> None:
    browser = httpx.Client(base_url=world.server.base_url, timeout=60)
    try:
        account = provision(
            urls, psp_kms, roles=(FINANCE,), tenant=world.people["finance"].account.tenant
        )
        sign_in_web(browser, account)
        paid = world.deposit(world.accepted_quote())
        page = browser.get("/app/finance")
        action = f"/app/finance/payments/{paid}/refund"
        key = re.search(
            rf'action="{re.escape(action)}".*?name="key" value="([^"]+)"', page.text, re.S
        )
        assert key
        sent = browser.post(
            action, data={"csrf": page_csrf(page), "key": key.group(1), "amount": typed}
        )
        assert sent.status_code == 422, (typed, sent.status_code, sent.text[:300])
        assert "Nothing was sent" in sent.text
        assert_inert(sent.text)
        assert world.approvals() == []
    finally:
        browser.close()
