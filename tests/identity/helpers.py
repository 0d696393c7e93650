"""Driving the login pages the way a browser does, and provisioning users to log in as."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp

from ramparts.apps import app_roles, encrypted_columns_of, installed_apps
from ramparts.audit.services import AuditLog
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.detectors import Redactor
from ramparts.identity.services import Provisioning
from ramparts.quotes.roles import BUYER

CLIENT_ID = "test-client"
REDIRECT_URI = "https://client.example/callback"
OVERLAP = timedelta(seconds=630)
TEST_REDACTOR = Redactor(b"test redaction key, not a secret.")


def provisioning_for(owner: Database, kms: Kms) -> Provisioning:
    """Provisioning on the owner's connection, recording into the audit trail as the CLI does,
    with the roles and encrypted columns of every installed app (the tests serve them all)."""
    apps = installed_apps().values()
    return Provisioning(
        owner,
        kms,
        AuditLog(owner, TEST_REDACTOR),
        roles=app_roles(apps),
        app_columns=encrypted_columns_of(apps),
    )


@dataclass(frozen=True)
class Account:
    tenant: str
    tenant_id: uuid.UUID
    username: str
    password: str
    totp_secret: str | None
    user_id: uuid.UUID


def provision(
    urls: DatabaseUrls,
    kms: Kms,
    *,
    roles: tuple[str, ...] = (BUYER,),
    with_totp: bool = True,
    tenant: str | None = None,
) -> Account:
    """A user in a fresh tenant (or in the existing tenant with slug `tenant`), the test
    client, and a signing key if none exists."""

    async def run() -> Account:
        owner = Database(urls.owner, pool_size=1)
        try:
            provisioning = provisioning_for(owner, kms)
            slug = tenant or f"t-{secrets.token_hex(5)}"
            record = await provisioning.ensure_tenant(slug=slug, name=slug, region="eu")
            password = secrets.token_urlsafe(16)
            totp = pyotp.random_base32() if with_totp else None
            local = f"user-{secrets.token_hex(3)}" if tenant else "user"
            username = f"{local}@{slug}.example"
            user_id = await provisioning.set_user(
                record,
                username=username,
                display_name="U",
                password=password,
                roles=roles,
                totp_secret=totp,
            )
            await provisioning.ensure_public_client(
                client_id=CLIENT_ID,
                name="Test client",
                redirect_uri=REDIRECT_URI,
                post_logout_redirect_uri="https://client.example/",
            )
            await provisioning.ensure_signing_key(overlap=OVERLAP)
            return Account(slug, record.id, username, password, totp, user_id)
        finally:
            await owner.dispose()

    return asyncio.run(run())


def csrf_of(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def current_code(secret: str) -> str:
    return pyotp.TOTP(secret).now()


def next_code(secret: str) -> str:
    """The next step's code: accepted (one step of drift) even when the current one is used."""
    return pyotp.TOTP(secret).at(int(time.time()) + 30)


def log_in(
    browser: httpx.Client, authorize_url: str, account: Account, *, otp: str | None = None
) -> httpx.Response:
    """Authorize, password, second factor; returns the final redirect (to the client)."""
    start = browser.get(authorize_url)
    assert start.status_code == 303, start.text
    assert start.headers["location"] == "/login"
    form = browser.get("/login")
    password = browser.post(
        "/login",
        data={
            "tenant": account.tenant,
            "username": account.username,
            "password": account.password,
            "csrf": csrf_of(form),
        },
    )
    assert password.status_code == 303, password.text
    assert password.headers["location"] == "/login/mfa"
    mfa_page = browser.get("/login/mfa")
    assert account.totp_secret is not None
    return browser.post(
        "/login/mfa",
        data={"otp": otp or current_code(account.totp_secret), "csrf": csrf_of(mfa_page)},
    )


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_path(**overrides: str) -> tuple[str, str]:
    """An authorize request for the test client with a fresh PKCE pair: (path, verifier)."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"/oauth/authorize?{urlencode(params)}", verifier


def begin(browser: httpx.Client) -> str:
    """Start a login flow in `browser`; returns the PKCE verifier for the code exchange."""
    path, verifier = authorize_path()
    browser.get(path)
    return verifier


def submit_password(browser: httpx.Client, account: Account, **fields: str) -> httpx.Response:
    """The password form of the flow in progress, with the account's values unless given."""
    form = browser.get("/login")
    data = {
        "tenant": account.tenant,
        "username": account.username,
        "password": account.password,
        "csrf": csrf_of(form),
        **fields,
    }
    return browser.post("/login", data=data)


def obtain_tokens(
    server: httpx.Client, account: Account, *, otp: str | None = None
) -> dict[str, Any]:
    """Run the whole code + PKCE flow; returns the token endpoint's JSON."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=server.base_url) as browser:
        final = log_in(browser, f"/oauth/authorize?{urlencode(params)}", account, otp=otp)
    response = exchange_code(server, code_from(final.headers["location"]), verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def code_from(location: str) -> str:
    """The authorization code in a redirect back to the client."""
    return parse_qs(urlsplit(location).query)["code"][0]


def exchange_code(client: httpx.Client, code: str, verifier: str, **fields: str) -> httpx.Response:
    """POST the code to the token endpoint as the test client (override any field)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        "code_verifier": verifier,
        **fields,
    }
    return client.post("/oauth/token", data=data)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_client(urls: DatabaseUrls, kms: Kms, client_id: str, redirect_uri: str) -> None:
    async def run() -> None:
        owner = Database(urls.owner, pool_size=1)
        try:
            await provisioning_for(owner, kms).ensure_public_client(
                client_id=client_id,
                name=client_id,
                redirect_uri=redirect_uri,
                post_logout_redirect_uri=redirect_uri,
            )
        finally:
            await owner.dispose()

    asyncio.run(run())


def sign_in_demo_buyer(browser: httpx.Client, report: dict[str, Any]) -> httpx.Response:
    """The token response of `buyer@acme.test` from a `seed-demo --json` report, signed in
    through the first-party client as a person would (password, TOTP, PKCE code)."""
    return sign_in_demo_user(browser, report, "buyer@acme.test")


def demo_authorization(report: dict[str, Any]) -> tuple[str, str]:
    """The first-party client's authorization request (code flow, PKCE S256) from a
    `seed-demo --json` report, and the PKCE verifier that redeems its code."""
    client = report["oidc_client"]
    verifier, challenge = pkce_pair()
    authorize = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uri"],
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return authorize, verifier


def sign_in_demo_user(
    browser: httpx.Client, report: dict[str, Any], username: str
) -> httpx.Response:
    """The token response of `username`, one of acme's demo users in a `seed-demo --json`
    report, signed in as `sign_in_demo_buyer` signs in the buyer."""
    user = next(u for u in report["users"] if u["username"] == username)
    client = report["oidc_client"]
    authorize, verifier = demo_authorization(report)
    account = Account(
        tenant="acme",
        tenant_id=uuid.UUID(report["tenants"][0]["id"]),
        username=user["username"],
        password=user["password"],
        totp_secret=user["totp_secret"],
        user_id=uuid.uuid4(),
    )
    final = log_in(browser, authorize, account)
    return exchange_code(
        browser,
        code_from(final.headers["location"]),
        verifier,
        client_id=client["client_id"],
        redirect_uri=client["redirect_uri"],
    )
