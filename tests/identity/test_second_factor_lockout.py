"""Brute force against the second factor: its own counter, which a correct password never
resets, progressive locks with an alert, and the per-address throttle; TOTP codes, recovery
codes and passkey assertions alike (issue 12, finding 1)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pyotp
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.lockout import (
    ACCOUNT_MAX_LOCK,
    ADDRESS_MAX_FAILURES,
    SECOND_FACTOR_BASE_LOCK,
    SECOND_FACTOR_FREE_FAILURES,
    SECOND_FACTOR_MAX_LOCK,
)
from ramparts.identity.login import new_recovery_code
from tests.audit.trail import recorded
from tests.conftest import libpq
from tests.identity.authenticator import Authenticator
from tests.identity.helpers import (
    Account,
    begin,
    csrf_of,
    next_code,
    provision,
    submit_password,
)

FACTORS = ["totp", "recovery_code", "passkey"]
FREE_FAILURES = SECOND_FACTOR_FREE_FAILURES  # wrong second factors before the first lock
FIRST_LOCK = SECOND_FACTOR_BASE_LOCK  # then doubling with each further failure


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


def new_address() -> str:
    """A loopback address of its own, so the address throttle these tests trip stays theirs."""
    return f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@contextmanager
def browser_at(server: httpx.Client, address: str) -> Iterator[httpx.Client]:
    """A browser whose connections come from `address` (any 127/8 address is loopback)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=server.base_url, transport=transport) as browser:
        yield browser


@dataclass
class User:
    """An account that enrolled its second factor through the login pages."""

    account: Account
    factor: str
    origin: str
    totp_secret: str | None = None
    device: Authenticator | None = None
    recovery_codes: list[str] = field(default_factory=list)

    def right(self, browser: httpx.Client) -> httpx.Response:
        """The genuine second factor, at the MFA step of `browser`'s flow."""
        if self.factor == "passkey":
            assert self.device is not None
            return passkey_attempt(browser, self.origin, self.device)
        if self.factor == "recovery_code":
            return code_attempt(browser, self.recovery_codes.pop())
        assert self.totp_secret is not None
        return code_attempt(browser, next_code(self.totp_secret))  # enrolment used this step

    def wrong(self, browser: httpx.Client) -> httpx.Response:
        """A guess at the second factor, as an attacker who knows only the password makes."""
        if self.factor == "passkey":
            assert self.device is not None
            return passkey_attempt(browser, self.origin, forged_device(self.device))
        if self.factor == "recovery_code":
            return code_attempt(browser, new_recovery_code())
        assert self.totp_secret is not None
        return code_attempt(browser, wrong_totp(self.totp_secret))


def wrong_totp(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    now = int(datetime.now(UTC).timestamp())
    valid = {totp.at(now + drift) for drift in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{secrets.randbelow(10**6):06d}" for _ in range(99)) if c not in valid)


def forged_device(device: Authenticator) -> Authenticator:
    """An authenticator presenting the victim's credential id with a key of its own."""
    forged = Authenticator()
    forged.cred_init(device.rp_id, device.user_handle)
    forged.credential_id = device.credential_id
    return forged


def code_attempt(browser: httpx.Client, code: str) -> httpx.Response:
    page = browser.get("/login/mfa")
    assert page.status_code == 200, page.text
    return browser.post("/login/mfa", data={"otp": code, "csrf": csrf_of(page)})


def passkey_attempt(browser: httpx.Client, origin: str, device: Authenticator) -> httpx.Response:
    csrf = csrf_of(browser.get("/login/mfa"))
    options = browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
    assert options.status_code == 200, options.text
    assertion = device.sign_in(options.text, origin)
    return browser.post("/login/passkey", json=assertion, headers={"X-CSRF-Token": csrf})


def succeeded(response: httpx.Response) -> bool:
    return response.status_code == 303 or (
        response.status_code == 200 and "next" in response.json()
    )


def enrolled_user(server: httpx.Client, urls: DatabaseUrls, kms: Kms, factor: str) -> User:
    """A user who enrolled TOTP (or, for passkeys, a passkey) at first login."""
    origin = str(server.base_url).rstrip("/")
    user = User(provision(urls, kms, with_totp=False), factor, origin)
    with httpx.Client(base_url=server.base_url) as browser:
        begin(browser)
        assert submit_password(browser, user.account).headers["location"] == "/login/enroll"
        page = browser.get("/login/enroll")
        if factor == "passkey":
            user.device = Authenticator()
            csrf = csrf_of(page)
            options = browser.post("/login/passkey/options", headers={"X-CSRF-Token": csrf})
            credential = user.device.register(options.text, origin)
            done = browser.post("/login/passkey", json=credential, headers={"X-CSRF-Token": csrf})
            assert done.status_code == 200, done.text
        else:
            secret = re.search(r"<code>([A-Z2-7]{32})</code>", page.text)
            assert secret, page.text
            user.totp_secret = secret.group(1)
            code = pyotp.TOTP(user.totp_secret).now()
            done = browser.post("/login/enroll", data={"otp": code, "csrf": csrf_of(page)})
            assert done.status_code == 303, done.text
        codes = browser.get("/login/recovery")
        user.recovery_codes = re.findall(
            r"<code>([a-z2-7]{4}(?:-[a-z2-7]{4}){3})</code>", codes.text
        )
        assert len(user.recovery_codes) == 10
        assert browser.post("/login/continue", data={"csrf": csrf_of(codes)}).status_code == 303
    return user


def to_second_factor(browser: httpx.Client, account: Account) -> httpx.Response:
    """A fresh flow in `browser` and its password step."""
    begin(browser)
    return submit_password(browser, account)


def counters(urls: DatabaseUrls, account: Account) -> dict[str, Any]:
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "SELECT failed_logins, locked_until, second_factor_failures, "
            "second_factor_locked_until FROM users WHERE id = %s",
            (account.user_id,),
        ).fetchone()
    assert row is not None
    keys = ("failed_logins", "locked_until", "failures", "locked_until_2fa")
    return dict(zip(keys, row, strict=True))


def expire_second_factor_lock(urls: DatabaseUrls, account: Account) -> None:
    """Time passing: the lock's end moves into the past (nothing else changes)."""
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "UPDATE users SET second_factor_locked_until = now() - interval '1 second' "
            "WHERE id = %s",
            (account.user_id,),
        )


@pytest.mark.parametrize("factor", FACTORS)
def test_the_reviewers_attack_ends_locked(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, factor: str
) -> None:
    """4 wrong second factors, a fresh flow with the password, 4 more... for 40 guesses."""
    user = enrolled_user(server, urls, kms, factor)
    attacker = new_address()
    answers: list[int] = []
    for _ in range(10):
        with browser_at(server, attacker) as browser:
            password = to_second_factor(browser, user.account)
            if password.status_code != 303:
                answers.append(password.status_code)
                continue
            for _ in range(4):
                answer = user.wrong(browser)
                answers.append(answer.status_code)
                if answer.status_code != 401:
                    break  # the flow is over
    # Only the first five guesses were checked at all; every later one met the lock.
    assert answers[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert set(answers[FREE_FAILURES:]) == {429}, answers
    # Even the genuine user, elsewhere and with the right factor, is refused while it lasts...
    with browser_at(server, new_address()) as browser:
        assert to_second_factor(browser, user.account).headers["location"] == "/login/mfa"
        refused = user.right(browser)
        assert refused.status_code == 429, refused.text
    # ...and the right password did not reset the second factor's count.
    state = counters(urls, user.account)
    assert state["failed_logins"] == 0
    assert state["locked_until"] is None
    assert state["failures"] == FREE_FAILURES
    assert state["locked_until_2fa"] > datetime.now(UTC) + FIRST_LOCK / 2
    [alert] = recorded(urls, user.account.tenant_id, Action.SECOND_FACTOR_LOCKED)
    assert alert["resource"] == {"type": "user", "id": str(user.account.user_id)}
    assert alert["details"] == {
        "failures": FREE_FAILURES,
        "seconds": int(FIRST_LOCK.total_seconds()),
        "method": factor,
    }


@pytest.mark.parametrize("factor", FACTORS)
def test_locks_grow_and_only_a_good_second_factor_resets_the_count(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, factor: str
) -> None:
    user = enrolled_user(server, urls, kms, factor)
    address = new_address()
    with browser_at(server, address) as browser:
        for _ in range(FREE_FAILURES):
            to_second_factor(browser, user.account)
            assert user.wrong(browser).status_code == 401
    first = counters(urls, user.account)["locked_until_2fa"]
    expire_second_factor_lock(urls, user.account)
    with browser_at(server, address) as browser:  # one more wrong guess: twice as long
        to_second_factor(browser, user.account)
        assert user.wrong(browser).status_code == 401
    state = counters(urls, user.account)
    assert state["failures"] == FREE_FAILURES + 1
    assert state["locked_until_2fa"] - first > FIRST_LOCK / 2
    alerts = recorded(urls, user.account.tenant_id, Action.SECOND_FACTOR_LOCKED)
    assert [a["details"]["seconds"] for a in alerts] == [
        FIRST_LOCK.total_seconds(),
        2 * FIRST_LOCK.total_seconds(),
    ]
    expire_second_factor_lock(urls, user.account)
    with browser_at(server, address) as browser:
        assert to_second_factor(browser, user.account).status_code == 303
        assert counters(urls, user.account)["failures"] == FREE_FAILURES + 1
        assert succeeded(user.right(browser))
    state = counters(urls, user.account)
    assert (state["failures"], state["locked_until_2fa"]) == (0, None)


def test_parallel_guesses_are_counted_one_at_a_time(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Guesses sent all at once, from flows opened beforehand, cannot outrun the count."""
    user = enrolled_user(server, urls, kms, "totp")
    address, guesses = new_address(), 3 * FREE_FAILURES
    with ExitStack() as stack:
        browsers = [stack.enter_context(browser_at(server, address)) for _ in range(guesses)]
        for browser in browsers:
            assert to_second_factor(browser, user.account).status_code == 303
        forms = [(browser, csrf_of(browser.get("/login/mfa"))) for browser in browsers]
        code = wrong_totp(user.totp_secret or "")

        def guess(form: tuple[httpx.Client, str]) -> int:
            browser, csrf = form
            return browser.post("/login/mfa", data={"otp": code, "csrf": csrf}).status_code

        with ThreadPoolExecutor(max_workers=guesses) as pool:
            statuses = sorted(pool.map(guess, forms))
    assert statuses == [401] * FREE_FAILURES + [429] * (guesses - FREE_FAILURES)
    assert counters(urls, user.account)["failures"] == FREE_FAILURES


def test_one_count_for_every_kind_of_second_factor(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Passkeys, recovery codes and codes typed for an authenticator share one count."""
    user = enrolled_user(server, urls, kms, "passkey")
    with_codes = User(user.account, "recovery_code", user.origin)
    with browser_at(server, new_address()) as browser:
        to_second_factor(browser, user.account)
        assert user.wrong(browser).status_code == 401
        assert user.wrong(browser).status_code == 401
        assert with_codes.wrong(browser).status_code == 401
        assert with_codes.wrong(browser).status_code == 401
        to_second_factor(browser, user.account)
        # This user has no authenticator app: a typed code is refused, and counted all the same.
        assert code_attempt(browser, "123456").status_code == 401
        to_second_factor(browser, user.account)
        assert user.right(browser).status_code == 429
    assert counters(urls, user.account)["failures"] == FREE_FAILURES
    [alert] = recorded(urls, user.account.tenant_id, Action.SECOND_FACTOR_LOCKED)
    assert alert["details"]["method"] == "totp"


@pytest.mark.parametrize("factor", FACTORS)
def test_second_factor_failures_count_against_the_address(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, factor: str
) -> None:
    """Guesses spread over accounts, each staying under its own lock, still lock the address."""
    users = [enrolled_user(server, urls, kms, factor) for _ in range(5)]
    assert len(users) * (FREE_FAILURES - 1) == ADDRESS_MAX_FAILURES
    address = new_address()
    with browser_at(server, address) as browser:
        for user in users:
            to_second_factor(browser, user.account)
            for _ in range(FREE_FAILURES - 1):
                assert user.wrong(browser).status_code == 401
    [locked] = [
        event
        for event in recorded(urls, None, Action.ADDRESS_LOCKED)
        if event["resource"] == {"type": "address", "id": address}
    ]
    assert locked["details"]["failures"] == ADDRESS_MAX_FAILURES
    # The address is locked: a right password from it gets nowhere, elsewhere it does.
    with browser_at(server, address) as browser:
        assert to_second_factor(browser, users[-1].account).status_code == 401
    with browser_at(server, new_address()) as browser:
        assert to_second_factor(browser, users[-1].account).status_code == 303


def test_a_long_history_of_password_failures_still_locks(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Lock durations stop growing at their cap instead of overflowing into an error."""
    account = provision(urls, kms)
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute("UPDATE users SET failed_logins = 1000 WHERE id = %s", (account.user_id,))
    with browser_at(server, new_address()) as browser:
        begin(browser)
        wrong = submit_password(browser, account, password=secrets.token_urlsafe(12))
        assert wrong.status_code == 401
    state = counters(urls, account)
    assert state["failed_logins"] == 1001
    assert state["locked_until"] - datetime.now(UTC) > ACCOUNT_MAX_LOCK - timedelta(minutes=1)
    assert state["locked_until"] - datetime.now(UTC) <= ACCOUNT_MAX_LOCK


def test_a_long_history_of_second_factor_failures_still_locks(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    user = enrolled_user(server, urls, kms, "totp")
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "UPDATE users SET second_factor_failures = 1000 WHERE id = %s",
            (user.account.user_id,),
        )
    with browser_at(server, new_address()) as browser:
        assert to_second_factor(browser, user.account).status_code == 303
        assert user.wrong(browser).status_code == 401
    state = counters(urls, user.account)
    assert state["failures"] == 1001
    remaining = state["locked_until_2fa"] - datetime.now(UTC)
    assert SECOND_FACTOR_MAX_LOCK - timedelta(minutes=1) < remaining <= SECOND_FACTOR_MAX_LOCK
