"""Refresh-token families, revocation, lockout, TOTP and first-login enrollment."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pyotp
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.lockout import ACCOUNT_FREE_FAILURES, ADDRESS_MAX_FAILURES
from tests.audit.trail import recorded
from tests.conftest import libpq
from tests.identity.helpers import (
    CLIENT_ID,
    REDIRECT_URI,
    Account,
    authorize_path,
    bearer,
    begin,
    csrf_of,
    current_code,
    log_in,
    next_code,
    obtain_tokens,
    provision,
    register_client,
    submit_password,
)


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


@pytest.fixture
def account(urls: DatabaseUrls, kms: Kms) -> Account:
    return provision(urls, kms)


def refresh(server: httpx.Client, token: str) -> httpx.Response:
    return server.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID},
    )


def test_refresh_rotates_and_reuse_revokes_the_family(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    first = obtain_tokens(server, account)
    assert len(first["refresh_token"].split(".")[1]) >= 43  # 256 bits, base64url
    second = refresh(server, first["refresh_token"])
    assert second.status_code == 200
    rotated: dict[str, Any] = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert "id_token" not in rotated
    assert server.get("/oauth/userinfo", headers=bearer(rotated["access_token"])).status_code == 200

    reused = refresh(server, first["refresh_token"])  # the consumed one, replayed
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    [event] = recorded(urls, account.tenant_id, Action.REFRESH_TOKEN_REUSED)
    assert event["decision"] == "deny"
    assert event["details"]["family_revoked"] is True
    assert first["refresh_token"] not in json.dumps(event)
    # The whole family is dead: the newest refresh token and every access token it produced.
    assert refresh(server, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    for token in (first["access_token"], rotated["access_token"]):
        assert server.get("/oauth/userinfo", headers=bearer(token)).status_code == 401


def test_refresh_token_is_bound_to_its_client(
    server: httpx.Client, account: Account, urls: DatabaseUrls, kms: Kms
) -> None:
    register_client(urls, kms, "other-client", "https://other.example/cb")
    tokens = obtain_tokens(server, account)
    other = server.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "other-client",
        },
    )
    assert other.status_code == 400
    assert other.json() == {
        "error": "invalid_grant",
        "error_description": "refresh token was issued to another client",
    }
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_reuse_through_another_client_still_revokes_the_family(
    server: httpx.Client, account: Account, urls: DatabaseUrls, kms: Kms
) -> None:
    register_client(urls, kms, "other-client", "https://other.example/cb")
    tokens = obtain_tokens(server, account)
    rotated = refresh(server, tokens["refresh_token"]).json()
    replayed = server.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "other-client",
        },
    )
    assert replayed.json()["error"] == "invalid_grant"
    assert refresh(server, rotated["refresh_token"]).json()["error"] == "invalid_grant"


def test_revocation_ends_the_family(server: httpx.Client, account: Account) -> None:
    tokens = obtain_tokens(server, account)
    revoked = server.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": CLIENT_ID}
    )
    assert revoked.status_code == 200
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert server.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    unknown = server.post("/oauth/revoke", data={"token": "nonsense", "client_id": CLIENT_ID})
    assert unknown.status_code == 200  # RFC 7009: no oracle for unknown tokens


def password_attempt(
    server: httpx.Client, account: Account, password: str, **fields: str
) -> httpx.Response:
    with httpx.Client(base_url=server.base_url) as browser:
        begin(browser)
        return submit_password(browser, account, password=password, **fields)


def strip_csrf(page: httpx.Response) -> str:
    return re.sub(r'name="csrf" value="[^"]+"', "", page.text)


def test_unknown_user_tenant_and_wrong_password_look_the_same(
    server: httpx.Client, account: Account
) -> None:
    wrong_password = password_attempt(server, account, "wrong-password-123")
    unknown_user = password_attempt(
        server, account, "wrong-password-123", username=f"ghost@{account.tenant}.example"
    )
    unknown_tenant = password_attempt(
        server, account, "wrong-password-123", tenant="no-such-tenant"
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert unknown_tenant.status_code == 401
    assert "Wrong organisation, username or password." in wrong_password.text
    # Same page apart from the echoed fields.
    assert strip_csrf(unknown_user).replace(
        f"ghost@{account.tenant}.example", account.username
    ) == strip_csrf(wrong_password)
    assert strip_csrf(unknown_tenant).replace(
        'value="no-such-tenant"', f'value="{account.tenant}"'
    ) == strip_csrf(wrong_password)


def test_account_locks_after_repeated_failures(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    for _ in range(ACCOUNT_FREE_FAILURES):
        assert password_attempt(server, account, "wrong-password-123").status_code == 401
    failures = recorded(urls, account.tenant_id, Action.LOGIN_FAILED)
    assert [e["details"]["reason"] for e in failures] == ["bad_password"] * ACCOUNT_FREE_FAILURES
    assert all(e["resource"]["id"] == str(account.user_id) for e in failures)
    assert all(e["actor"]["ip"] == "127.0.0.1" for e in failures)
    # The username is an email: recorded as a keyed fingerprint, never in the clear.
    assert all(e["actor"]["username"].startswith("[EMAIL:") for e in failures)
    [locked_event] = recorded(urls, account.tenant_id, Action.ACCOUNT_LOCKED)
    assert locked_event["details"]["failures"] == ACCOUNT_FREE_FAILURES
    # Locked: even the right password is refused, with the same answer as a wrong one.
    locked = password_attempt(server, account, account.password)
    assert locked.status_code == 401
    assert "Wrong organisation, username or password." in locked.text


def test_totp_code_is_single_use(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    assert account.totp_secret is not None
    code = current_code(account.totp_secret)
    with httpx.Client(base_url=server.base_url) as browser:
        first = log_in(browser, authorize_path()[0], account, otp=code)
    assert first.status_code == 303
    with httpx.Client(base_url=server.base_url) as browser:
        replay = log_in(browser, authorize_path()[0], account, otp=code)
    assert replay.status_code == 401
    [replayed] = recorded(urls, account.tenant_id, Action.TOTP_REPLAYED)
    assert replayed["resource"] == {"type": "user", "id": str(account.user_id)}
    assert [e["decision"] for e in recorded(urls, account.tenant_id, Action.LOGIN_SUCCEEDED)] == [
        "allow"
    ]


def test_wrong_codes_end_the_flow(server: httpx.Client, account: Account) -> None:
    assert account.totp_secret is not None
    wrong = f"{(int(current_code(account.totp_secret)) + 500_000) % 1_000_000:06d}"
    with httpx.Client(base_url=server.base_url) as browser:
        assert log_in(browser, authorize_path()[0], account, otp=wrong).status_code == 401
        statuses = []
        for _ in range(4):
            page = browser.get("/login/mfa")
            if page.status_code != 200:
                statuses.append(page.status_code)
                break
            statuses.append(
                browser.post("/login/mfa", data={"otp": wrong, "csrf": csrf_of(page)}).status_code
            )
        assert statuses[-1] == 400  # flow discarded after five failures
        assert browser.get("/login/mfa").status_code == 400


def test_first_login_forces_totp_enrollment(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    account = provision(urls, kms, with_totp=False)

    def password_step(browser: httpx.Client) -> httpx.Response:
        begin(browser)
        return submit_password(browser, account)

    with httpx.Client(base_url=server.base_url) as browser:
        assert password_step(browser).headers["location"] == "/login/enroll"
        assert browser.get("/login/mfa").status_code == 400  # no way around enrollment
    with httpx.Client(base_url=server.base_url) as browser:
        assert password_step(browser).headers["location"] == "/login/enroll"
        page = browser.get("/login/enroll")
        secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.text)
        assert secret, page.text
        step = browser.post(
            "/login/enroll", data={"otp": pyotp.TOTP(secret.group(1)).now(), "csrf": csrf_of(page)}
        )
        assert step.headers["location"] == "/login/recovery"
        enrolled = browser.get("/login/recovery")
        assert enrolled.status_code == 200
        codes = re.findall(r"<code>([a-z2-7]{4}(?:-[a-z2-7]{4}){3})</code>", enrolled.text)
        assert len(set(codes)) == 10
        with psycopg.connect(libpq(urls.owner)) as conn:
            stored = conn.execute(
                "SELECT code_hash FROM recovery_codes WHERE user_id = %s", (account.user_id,)
            ).fetchall()
        assert len(stored) == 10
        assert not any(code.encode() in bytes(row[0]) for row in stored for code in codes)
        done = browser.post("/login/continue", data={"csrf": csrf_of(enrolled)})
        assert done.status_code == 303
        assert done.headers["location"].startswith(REDIRECT_URI + "?code=")
    # Enrolled: the next login asks for the second factor; a recovery code works once.
    for expected in (303, 401):
        with httpx.Client(base_url=server.base_url) as browser:
            assert password_step(browser).headers["location"] == "/login/mfa"
            mfa = browser.get("/login/mfa")
            used = browser.post("/login/mfa", data={"otp": codes[0], "csrf": csrf_of(mfa)})
            assert used.status_code == expected


def test_access_token_revocation(server: httpx.Client, account: Account) -> None:
    tokens = obtain_tokens(server, account)
    wrong_client = server.post(
        "/oauth/revoke", data={"token": tokens["access_token"], "client_id": "ramparts-web"}
    )
    assert wrong_client.status_code == 200
    assert server.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
    server.post("/oauth/revoke", data={"token": tokens["access_token"], "client_id": CLIENT_ID})
    assert server.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).status_code == 401
    # Only that token: the session's refresh token still works.
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_logout_ends_the_hinted_session_and_redirects_only_where_registered(
    server: httpx.Client, account: Account
) -> None:
    tokens = obtain_tokens(server, account)
    evil = server.get(
        "/oauth/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.example/",
        },
    )
    assert evil.status_code == 400
    assert "location" not in evil.headers
    forged = server.get("/oauth/logout", params={"id_token_hint": tokens["access_token"]})
    assert forged.status_code == 400  # an access token is not an ID token
    assert account.totp_secret is not None
    fresh = obtain_tokens(server, account, otp=next_code(account.totp_secret))
    with httpx.Client(base_url=server.base_url) as browser:
        confirm = browser.get(
            "/oauth/logout",
            params={
                "id_token_hint": fresh["id_token"],
                "state": "bye",
                "post_logout_redirect_uri": "https://client.example/",
            },
        )
        assert confirm.status_code == 200  # the user confirms first (see test_protocol_rules)
        ticket = re.search(r'name="ticket" value="([^"]+)"', confirm.text)
        assert ticket is not None
        done = browser.post("/oauth/logout/confirm", data={"ticket": ticket.group(1)})
    assert done.status_code == 303
    assert done.headers["location"] == "https://client.example/?state=bye"
    # The sign-in the hint was issued for ended; the user's other one goes on (finding 8).
    assert refresh(server, fresh["refresh_token"]).json()["error"] == "invalid_grant"
    assert server.get("/oauth/userinfo", headers=bearer(fresh["access_token"])).status_code == 401
    assert server.get("/oauth/userinfo", headers=bearer(tokens["access_token"])).status_code == 200
    assert "access_token" in refresh(server, tokens["refresh_token"]).json()


def test_address_locks_after_many_failures_across_accounts(
    make_database: Callable[..., DatabaseUrls],
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    urls = make_database()  # its own throttle table: this locks out 127.0.0.1
    victims = [provision(urls, kms) for _ in range(2)]
    server = serve_app(database_urls=urls)
    for attempt in range(ADDRESS_MAX_FAILURES):
        # Spread over accounts and unknown users, so no single account locks first.
        username = f"nobody{attempt}@example.test"
        assert (
            password_attempt(server, victims[0], "guess-123456", username=username).status_code
            == 401
        )
    [locked] = recorded(urls, None, Action.ADDRESS_LOCKED)
    assert locked["resource"] == {"type": "address", "id": "127.0.0.1"}
    assert password_attempt(server, victims[1], victims[1].password).status_code == 401


def test_a_totp_secret_that_does_not_open_is_a_refused_second_factor(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, account: Account
) -> None:
    """A sealed secret moved from another tenant's row (or tampered with, or shredded) fails
    to open at sign-in: the second factor is refused and audited, never a server error."""
    other = provision(urls, kms)
    assert other.totp_secret is not None
    with psycopg.connect(libpq(urls.owner), autocommit=True) as db:
        (sealed,) = db.execute(  # type: ignore[misc]
            "SELECT sealed_secret FROM totp_credentials WHERE tenant_id = %s AND user_id = %s",
            (other.tenant_id, other.user_id),
        ).fetchone()
        moved = db.execute(
            "UPDATE totp_credentials SET sealed_secret = %s WHERE tenant_id = %s AND user_id = %s",
            (sealed, account.tenant_id, account.user_id),
        ).rowcount
    assert moved == 1
    with httpx.Client(base_url=server.base_url) as browser:
        answer = log_in(browser, authorize_path()[0], account, otp=current_code(other.totp_secret))
    assert answer.status_code == 401, answer.text
    [failed] = recorded(urls, account.tenant_id, Action.TOTP_FAILED)
    assert failed["details"]["reason"] == "unreadable_secret"
