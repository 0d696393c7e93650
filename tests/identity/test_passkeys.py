"""WebAuthn: enrollment, login, user verification required, clones caught by the counter."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt as pyjwt
import psycopg
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.audit.trail import recorded
from tests.conftest import libpq
from tests.identity.authenticator import Authenticator
from tests.identity.helpers import (
    CLIENT_ID,
    REDIRECT_URI,
    Account,
    begin,
    code_from,
    csrf_of,
    exchange_code,
    provision,
    submit_password,
)


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


@pytest.fixture
def account(urls: DatabaseUrls, kms: Kms) -> Account:
    return provision(urls, kms, with_totp=False)


def start(browser: httpx.Client, account: Account) -> tuple[str, str]:
    """Authorize and pass the password step; returns (next page, PKCE verifier)."""
    verifier = begin(browser)
    return submit_password(browser, account).headers["location"], verifier


def ceremony(
    browser: httpx.Client, page: str, device: Authenticator, origin: str
) -> httpx.Response:
    csrf = csrf_of(browser.get(page))
    options = browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
    assert options.status_code == 200, options.text
    if page == "/login/enroll":
        credential = device.register(options.text, origin)
    else:
        credential = device.sign_in(options.text, origin)
    return browser.post("/login/passkey", json=credential, headers={"X-CSRF-Token": csrf})


def tokens(browser: httpx.Client, location: str, verifier: str) -> dict[str, Any]:
    response = exchange_code(browser, code_from(location), verifier)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def enroll(server: httpx.Client, account: Account, device: Authenticator) -> None:
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, verifier = start(browser, account)
        assert page == "/login/enroll"
        registered = ceremony(browser, page, device, origin)
        assert registered.status_code == 200, registered.text
        assert registered.json() == {"next": "/login/recovery"}
        codes_page = browser.get("/login/recovery")
        done = browser.post("/login/continue", data={"csrf": csrf_of(codes_page)})
        claims = pyjwt.decode(
            tokens(browser, done.headers["location"], verifier)["id_token"],
            options={"verify_signature": False},
        )
    assert claims["amr"] == ["pwd", "hwk", "mfa"]
    assert claims["acr"] == "urn:ramparts:acr:phr"


def test_passkey_enrollment_then_login(server: httpx.Client, account: Account) -> None:
    device = Authenticator()
    enroll(server, account, device)
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, verifier = start(browser, account)
        assert page == "/login/mfa"
        assert "Use a passkey" in browser.get(page).text
        signed_in = ceremony(browser, page, device, origin)
        assert signed_in.status_code == 200, signed_in.text
        location = signed_in.json()["next"]
        assert location.startswith(REDIRECT_URI + "?code=")
        access = tokens(browser, location, verifier)["access_token"]
    claims = pyjwt.decode(access, options={"verify_signature": False})
    assert claims["acr"] == "urn:ramparts:acr:phr"


def test_user_verification_is_required(server: httpx.Client, account: Account) -> None:
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        refused = ceremony(browser, page, Authenticator(user_verified=False), origin)
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:ramparts:problem:passkey-refused"


def test_cloned_authenticator_is_caught_by_the_counter(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    device = Authenticator()
    enroll(server, account, device)
    clone = copy.deepcopy(device)
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        assert ceremony(browser, page, device, origin).status_code == 200
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        # The clone signs with the same key but a counter the server has already seen.
        refused = ceremony(browser, page, clone, origin)
    assert refused.status_code == 401
    [event] = recorded(urls, account.tenant_id, Action.PASSKEY_REFUSED)
    assert event["decision"] == "deny"
    assert "sign count" in event["details"]["reason"].lower()


def test_wrong_origin_and_replayed_assertion_are_refused(
    server: httpx.Client, account: Account
) -> None:
    device = Authenticator()
    enroll(server, account, device)
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        phished = ceremony(browser, page, device, "https://ramparts.evil.example")
        assert phished.status_code == 401
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        csrf = csrf_of(browser.get(page))
        options = browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
        assertion = device.sign_in(options.text, origin)
        first = browser.post("/login/passkey", json=assertion, headers={"X-CSRF-Token": csrf})
        assert first.status_code == 200
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        csrf = csrf_of(browser.get(page))
        browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
        replayed = browser.post("/login/passkey", json=assertion, headers={"X-CSRF-Token": csrf})
        assert replayed.status_code == 401  # bound to the old challenge


def test_passkey_calls_need_the_flow_csrf_token(server: httpx.Client, account: Account) -> None:
    with httpx.Client(base_url=server.base_url) as browser:
        start(browser, account)
        forged = browser.post("/login/passkey/options", headers={"X-CSRF-Token": "forged"})
        assert forged.status_code == 400


def test_a_user_can_hold_several_passkeys(server: httpx.Client, account: Account) -> None:
    first, second = Authenticator(), Authenticator()
    enroll(server, account, first)
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, verifier = start(browser, account)
        location = ceremony(browser, page, first, origin).json()["next"]
        access = tokens(browser, location, verifier)["access_token"]
    auth = {"Authorization": f"Bearer {access}"}
    started = server.post("/api/me/passkeys/options", headers=auth)
    assert started.status_code == 200, started.text
    body = started.json()
    credential = second.register(json.dumps(body["options"]), origin)
    forged = server.post(
        "/api/me/passkeys",
        headers=auth,
        json={"ticket": body["ticket"][:-4] + "AAAA", "credential": credential},
    )
    assert forged.status_code == 400
    added = server.post(
        "/api/me/passkeys",
        headers=auth,
        json={"ticket": body["ticket"], "credential": credential, "name": "backup key"},
    )
    assert added.status_code == 201, added.text
    reused = server.post(
        "/api/me/passkeys",
        headers=auth,
        json={
            "ticket": body["ticket"],
            "credential": Authenticator().register(json.dumps(body["options"]), origin),
        },
    )
    assert reused.status_code == 400  # a ticket registers one passkey, once
    assert server.post("/api/me/passkeys/options").status_code == 401  # needs a token
    for device in (first, second):  # either one now signs in
        with httpx.Client(base_url=server.base_url) as browser:
            page, _ = start(browser, account)
            assert ceremony(browser, page, device, origin).status_code == 200


def test_adding_a_passkey_needs_a_recent_sign_in(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    device = Authenticator()
    enroll(server, account, device)
    origin = str(server.base_url).rstrip("/")
    with httpx.Client(base_url=server.base_url) as browser:
        page, verifier = start(browser, account)
        location = ceremony(browser, page, device, origin).json()["next"]
        refresh_token = tokens(browser, location, verifier)["refresh_token"]
    # The sign-in happened long ago: refreshed tokens keep the original auth_time.
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute(
            "UPDATE refresh_families SET auth_time = now() - interval '1 hour' WHERE user_id = %s",
            (account.user_id,),
        )
    stale = server.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
        },
    ).json()["access_token"]
    refused = server.post("/api/me/passkeys/options", headers={"Authorization": f"Bearer {stale}"})
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:ramparts:problem:reauthentication-required"
    [event] = recorded(urls, account.tenant_id, Action.PASSKEY_REFUSED)
    assert event["actor"]["id"] == str(account.user_id)
    assert event["details"]["status"] == 403


def test_refusals_are_in_our_words(server: httpx.Client, account: Account) -> None:
    """The WebAuthn library's own messages are logged, never shown."""
    with httpx.Client(base_url=server.base_url) as browser:
        page, _ = start(browser, account)
        assert page == "/login/enroll"
        csrf = {"X-CSRF-Token": csrf_of(browser.get(page))}
        assert browser.post("/login/passkey/options", headers=csrf).status_code == 200
        empty = browser.post("/login/passkey", headers=csrf)
        assert empty.status_code == 400
        assert empty.json()["detail"] == "send the credential as a JSON object"
        forged = {"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {}}
        refused = browser.post("/login/passkey", json=forged, headers=csrf)
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:ramparts:problem:passkey-refused"
    assert refused.json()["detail"] == "the new passkey's response does not verify"
