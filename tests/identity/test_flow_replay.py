"""Replaying a login flow's cookie gets nowhere: the state is on the server and only moves on."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pyotp
import pytest

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.identity.authenticator import Authenticator
from tests.identity.helpers import (
    Account,
    begin,
    csrf_of,
    provision,
    submit_password,
)

COOKIE = "ramparts_login"


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


def to_second_step(server: httpx.Client, account: Account) -> httpx.Client:
    browser = httpx.Client(base_url=server.base_url)
    begin(browser)
    submit_password(browser, account)
    return browser


def replayer(server: httpx.Client, cookie: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, cookies={COOKIE: cookie})


def test_second_factor_guesses_are_limited_even_with_a_replayed_cookie(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    account = provision(urls, kms)
    assert account.totp_secret is not None
    browser = to_second_step(server, account)
    page = browser.get("/login/mfa")
    saved, csrf = browser.cookies[COOKIE], csrf_of(page)
    statuses = []
    for _ in range(8):
        with replayer(server, saved) as attacker:
            statuses.append(
                attacker.post("/login/mfa", data={"otp": "000000", "csrf": csrf}).status_code
            )
    assert statuses[:4] == [401] * 4
    assert set(statuses[4:]) == {400}  # flow ended after five wrong codes
    right = pyotp.TOTP(account.totp_secret).now()
    with replayer(server, saved) as attacker:
        assert attacker.post("/login/mfa", data={"otp": right, "csrf": csrf}).status_code == 400
    # The wrong codes counted against the account's second factor: locked now, so a fresh
    # sign-in with the password is refused even the right code.
    fresh = to_second_step(server, account)
    page = fresh.get("/login/mfa")
    locked = fresh.post("/login/mfa", data={"otp": right, "csrf": csrf_of(page)})
    assert locked.status_code == 429
    assert fresh.get("/login/mfa").status_code == 400  # and that flow is over
    browser.close()
    fresh.close()


def test_one_enrollment_yields_one_code(server: httpx.Client, urls: DatabaseUrls, kms: Kms) -> None:
    account = provision(urls, kms, with_totp=False)
    browser = to_second_step(server, account)
    page = browser.get("/login/enroll")
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.text)
    assert secret
    browser.post(
        "/login/enroll", data={"otp": pyotp.TOTP(secret.group(1)).now(), "csrf": csrf_of(page)}
    )
    codes = browser.get("/login/recovery")
    saved, csrf = browser.cookies[COOKIE], csrf_of(codes)
    assert browser.post("/login/continue", data={"csrf": csrf}).status_code == 303
    with replayer(server, saved) as attacker:
        assert attacker.post("/login/continue", data={"csrf": csrf}).status_code == 400
    browser.close()


def test_a_stale_enrollment_flow_cannot_add_a_factor(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    account = provision(urls, kms, with_totp=False)
    attacker = to_second_step(server, account)  # knows the password, waits at enrollment
    victim = to_second_step(server, account)
    page = victim.get("/login/enroll")
    secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.text)
    assert secret
    assert (
        victim.post(
            "/login/enroll", data={"otp": pyotp.TOTP(secret.group(1)).now(), "csrf": csrf_of(page)}
        ).status_code
        == 303
    )
    origin = str(server.base_url).rstrip("/")
    stale = attacker.get("/login/enroll")
    csrf = csrf_of(stale)
    options = attacker.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
    credential = Authenticator().register(options.text, origin)
    refused = attacker.post("/login/passkey", json=credential, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 400
    attacker.close()
    victim.close()


def test_a_passkey_assertion_works_once(server: httpx.Client, urls: DatabaseUrls, kms: Kms) -> None:
    account = provision(urls, kms, with_totp=False)
    device = Authenticator()
    origin = str(server.base_url).rstrip("/")
    enrolling = to_second_step(server, account)
    csrf = csrf_of(enrolling.get("/login/enroll"))
    options = enrolling.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
    enrolling.post(
        "/login/passkey", json=device.register(options.text, origin), headers={"X-CSRF-Token": csrf}
    )
    enrolling.close()
    browser = to_second_step(server, account)
    csrf = csrf_of(browser.get("/login/mfa"))
    options = browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
    saved = browser.cookies[COOKIE]
    assertion = device.sign_in(options.text, origin)
    first = browser.post("/login/passkey", json=assertion, headers={"X-CSRF-Token": csrf})
    assert first.status_code == 200
    with replayer(server, saved) as attacker:
        again = attacker.post("/login/passkey", json=assertion, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 400
    browser.close()
