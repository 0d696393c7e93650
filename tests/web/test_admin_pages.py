"""The admin pages and the account page over HTTP: a real server, real sign-ins, real Cedar."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pyotp
import pytest
import segno

from ramparts.ai.killswitch import KILLSWITCH_MAX_AGE
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes.roles import BUYER
from tests.identity.helpers import Account, begin, provision, submit_password
from tests.web.sessions_helpers import page_csrf, sign_in_web, web_app

ADMIN_PAGES = ("/app/admin", "/app/admin/audit", "/app/admin/assistant")


@pytest.fixture(scope="module")
def server(
    serve_module_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> httpx.Client:
    return web_app(serve_module_app, urls, kms)


@pytest.fixture
def browsers() -> Iterator[list[httpx.Client]]:
    """Each test's browsers, closed after it."""
    opened: list[httpx.Client] = []
    yield opened
    for browser in opened:
        browser.close()


def _browser(
    server: httpx.Client, account: Account, opened: list[httpx.Client]
) -> tuple[httpx.Client, str]:
    """A signed-in browser of its own and its CSRF token."""
    browser = httpx.Client(base_url=server.base_url)
    opened.append(browser)
    home = sign_in_web(browser, account)
    assert home.status_code == 200, home.text
    return browser, page_csrf(home)


def test_the_admin_sees_the_tenants_users_with_their_factors_and_no_secret(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    admin = provision(urls, kms, roles=(ADMIN_ROLE,))
    colleague = provision(urls, kms, roles=(BUYER,), with_totp=False, tenant=admin.tenant)
    stranger = provision(urls, kms, roles=(ADMIN_ROLE,))  # another tenant's
    browser, csrf = _browser(server, admin, browsers)
    page = browser.get("/app/admin")
    assert page.status_code == 200, page.text
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"<th scope=\"row\">([^<]+)(.*?)</tr>", page.text, re.S)
    }
    assert set(rows) == {admin.username, colleague.username}
    assert "Enrolled" in rows[admin.username]
    assert "Not enrolled" in rows[colleague.username]
    assert "Active" in rows[colleague.username]
    assert "<time" in rows[admin.username]  # signed in just now: the last sign-in is known
    assert stranger.username not in page.text
    for secret in (admin.totp_secret, admin.password, colleague.password, "$argon2"):
        assert secret
        assert secret not in page.text
    listed = browser.get("/app/api/admin/users", headers={"X-CSRF-Token": csrf})
    assert listed.status_code == 200, listed.text
    users = {u["username"]: u for u in listed.json()["items"]}
    assert set(users) == {admin.username, colleague.username}
    assert users[admin.username]["mfa"] == {"totp": True, "passkeys": []}
    assert users[colleague.username]["roles"] == [BUYER]
    text = listed.text.lower()
    assert all(word not in text for word in ("hash", "sealed", "public_key", "recovery", "secret"))


def test_a_non_admin_gets_the_403_page_on_every_admin_page_and_the_api_refuses(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    buyer = provision(urls, kms, roles=(BUYER,))
    browser, csrf = _browser(server, buyer, browsers)
    for path in ADMIN_PAGES:
        page = browser.get(path)
        assert page.status_code == 403, (path, page.text)
        assert "You do not have permission" in page.text
    for path, data in (
        ("/app/admin/assistant/killswitch", {"engaged": "off", "csrf": csrf}),
        ("/app/admin/assistant/dlp", {"forbidden": "EMAIL", "csrf": csrf}),
    ):
        assert browser.post(path, data=data).status_code == 403
    api = browser.get("/app/api/admin/users", headers={"X-CSRF-Token": csrf})
    assert api.status_code == 403
    assert (
        browser.get("/app/api/audit/verification", headers={"X-CSRF-Token": csrf}).status_code
        == 403
    )


def test_the_audit_page_shows_the_verified_chain_and_then_where_it_broke(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    admin = provision(urls, kms, roles=(ADMIN_ROLE,))
    browser, csrf = _browser(server, admin, browsers)
    page = browser.get("/app/admin/audit")
    assert page.status_code == 200, page.text
    assert re.search(r"Chain verified: [\d,]+ events", page.text), page.text
    assert "identity:" in page.text
    assert "Allowed" in page.text
    fresh = browser.get("/app/api/audit/verification", headers={"X-CSRF-Token": csrf}).json()
    assert fresh["ok"] is True
    assert fresh["events"] > 0
    assert fresh["problems"] == []
    # The owner, with the append-only triggers off, rewrites one event of this tenant.
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner, owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        changed = owner.execute(
            "UPDATE audit_events SET body = replace(body, '\"allow\"', '\"deny\"') "
            "WHERE tenant_id = %s AND seq = (SELECT min(seq) FROM audit_events "
            "WHERE tenant_id = %s AND strpos(body, '\"allow\"') > 0)",
            (admin.tenant_id, admin.tenant_id),
        )
        assert changed.rowcount == 1
    broken = browser.get("/app/api/audit/verification", headers={"X-CSRF-Token": csrf}).json()
    assert broken["ok"] is False
    first = broken["problems"][0]
    assert first["kind"] == "hash_mismatch"
    page = browser.get("/app/admin/audit")
    assert f"Chain broken at event {first['seq']}" in page.text
    assert "Chain verified" not in page.text


def test_the_kill_switch_form_engages_and_lifts_the_tenants_switch(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    admin = provision(urls, kms, roles=(ADMIN_ROLE,))
    browser, csrf = _browser(server, admin, browsers)
    door = {"X-CSRF-Token": csrf}
    bad = browser.post(
        "/app/admin/assistant/killswitch",
        data={"engaged": "off", "tool": "Not A Tool", "csrf": csrf},
    )
    assert bad.status_code == 422
    assert 'role="alert"' in bad.text
    assert "tool" in bad.text
    assert browser.get("/app/api/assistant/killswitch", headers=door).json()["engaged"] is False
    off = browser.post(
        "/app/admin/assistant/killswitch",
        data={"engaged": "off", "tool": "", "reason": "incident 42", "csrf": csrf},
    )
    assert off.status_code == 303, off.text
    page = browser.get("/app/admin/assistant")
    assert "The assistant is off" in page.text
    assert "Your tenant switched it off" in page.text
    state = browser.get("/app/api/assistant/killswitch", headers=door).json()
    assert state["engaged"] is True
    assert state["held_by"] == ["tenant"]
    # Every process reads the switch at most KILLSWITCH_MAX_AGE ago: it holds within a second.
    time.sleep(KILLSWITCH_MAX_AGE)
    refused = browser.post("/app/api/assistant", json={"message": "hello"}, headers=door)
    assert refused.status_code == 503, refused.text
    on = browser.post("/app/admin/assistant/killswitch", data={"engaged": "on", "csrf": csrf})
    assert on.status_code == 303
    assert "The assistant is on" in browser.get("/app/admin/assistant").text
    assert browser.get("/app/api/assistant/killswitch", headers=door).json()["engaged"] is False


def test_the_dlp_form_saves_the_forbidden_kinds(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    admin = provision(urls, kms, roles=(ADMIN_ROLE,))
    browser, csrf = _browser(server, admin, browsers)
    door = {"X-CSRF-Token": csrf}
    saved = browser.post(
        "/app/admin/assistant/dlp", data={"forbidden": ["EMAIL", "CARD"], "csrf": csrf}
    )
    assert saved.status_code == 303, saved.text
    assert browser.get("/app/api/assistant/dlp", headers=door).json() == {
        "forbidden": ["CARD", "EMAIL"]
    }
    page = browser.get("/app/admin/assistant").text
    assert re.search(r'value="EMAIL" checked', page)
    assert not re.search(r'value="SSN" checked', page)
    bad = browser.post("/app/admin/assistant/dlp", data={"forbidden": ["NOPE"], "csrf": csrf})
    assert bad.status_code == 422
    assert browser.get("/app/api/assistant/dlp", headers=door).json()["forbidden"] == [
        "CARD",
        "EMAIL",
    ]
    cleared = browser.post("/app/admin/assistant/dlp", data={"csrf": csrf})
    assert cleared.status_code == 303
    assert browser.get("/app/api/assistant/dlp", headers=door).json() == {"forbidden": []}


def test_the_account_page_shows_the_sessions_factors_and_offers_a_passkey(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    buyer = provision(urls, kms, roles=(BUYER,))
    browser, _ = _browser(server, buyer, browsers)
    page = browser.get("/app/account")
    assert page.status_code == 200, page.text
    assert "Code from an authenticator app" in page.text
    assert "Second factor used" in page.text
    assert '<script src="/static/account.js" defer></script>' in page.text
    assert 'role="status"' in page.text
    assert '<label for="passkey-name">' in page.text
    script = browser.get("/static/account.js")
    assert script.status_code == 200
    assert "/app/api/" in script.text
    assert "X-CSRF-Token" in script.text


def test_enrolment_draws_the_totp_qr_code_inline_and_requests_nothing_else(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, browsers: list[httpx.Client]
) -> None:
    account = provision(urls, kms, with_totp=False)
    browser = httpx.Client(base_url=server.base_url)
    begin(browser)
    submit_password(browser, account)
    page = browser.get("/login/enroll")
    assert page.status_code == 200, page.text
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.text)
    assert secret, page.text  # the text key, for who cannot scan
    svg = re.search(r"<svg.*?</svg>", page.text, re.S)
    assert svg
    # The QR code is the provisioning URI of that secret: its modules are segno's for it.
    uri = pyotp.TOTP(secret.group(1)).provisioning_uri(
        name=account.username, issuer_name="Ramparts"
    )
    expected = re.search(r' d="([^"]+)"', segno.make(uri, error="m").svg_inline(scale=4, border=4))
    assert expected
    assert expected.group(1) in svg.group(0)
    # Nothing but our own stylesheet, icon and script is fetched; no inline style or script.
    fetched = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert all(link.startswith("/") and not link.startswith("//") for link in fetched), fetched
    assert "<img" not in page.text
    assert "style=" not in page.text
    assert "<script>" not in page.text
    browser.close()
