"""Federated login: a tenant delegates sign-in to its own OIDC provider. The provider here is a
second, independent Ramparts server (its own database and issuer) speaking real OIDC."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jwt as pyjwt

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.services import Provisioning, TenantRecord
from tests.audit.trail import recorded
from tests.identity.helpers import (
    REDIRECT_URI,
    Account,
    begin,
    code_from,
    csrf_of,
    current_code,
    exchange_code,
    provision,
    provisioning_for,
)


@dataclass(frozen=True)
class Setup:
    rp: httpx.Client
    idp: httpx.Client
    idp_account: Account
    tenant: TenantRecord
    local_user: uuid.UUID


def _run(work: Callable[[Provisioning], object], urls: DatabaseUrls, kms: Kms) -> object:
    async def run() -> object:
        owner = Database(urls.owner, pool_size=1)
        try:
            return await work(provisioning_for(owner, kms))  # type: ignore[misc]
        finally:
            await owner.dispose()

    return asyncio.run(run())


def federate(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
    *,
    mfa_amr: list[str] | None = None,
    mfa_acr: list[str] | None = None,
    link: bool = True,
) -> Setup:
    rp = serve_app()
    rp_base = str(rp.base_url).rstrip("/")
    idp_urls = make_database()
    idp_account = provision(idp_urls, kms)  # a user at the IdP, with TOTP
    idp = serve_app(database_urls=idp_urls, host="localhost")
    idp_base = str(idp.base_url).rstrip("/")

    async def idp_client(p: Provisioning) -> None:
        await p.ensure_public_client(
            client_id="relying-party",
            name="Relying party",
            redirect_uri=f"{rp_base}/login/sso/callback",
            post_logout_redirect_uri=f"{rp_base}/",
        )

    _run(idp_client, idp_urls, kms)
    local = provision(urls, kms, with_totp=False)  # the same person, known to the RP

    async def rp_tenant(p: Provisioning) -> TenantRecord:
        tenant = TenantRecord(local.tenant_id, local.tenant, local.tenant, "eu")
        await p.set_identity_provider(
            tenant, issuer=idp_base, client_id="relying-party", mfa_amr=mfa_amr, mfa_acr=mfa_acr
        )
        if link:
            await p.link_federated_identity(
                tenant, user_id=local.user_id, issuer=idp_base, subject=str(idp_account.user_id)
            )
        return tenant

    tenant = _run(rp_tenant, urls, kms)
    assert isinstance(tenant, TenantRecord)
    return Setup(rp, idp, idp_account, tenant, local.user_id)


def sign_in_via_idp(setup: Setup) -> tuple[httpx.Client, httpx.Response, str]:
    """Returns the browser, the RP's answer to the IdP callback, and the PKCE verifier."""
    browser = httpx.Client(base_url=setup.rp.base_url)
    verifier = begin(browser)
    form = browser.get("/login")
    to_idp = browser.post("/login/sso", data={"tenant": setup.tenant.slug, "csrf": csrf_of(form)})
    assert to_idp.status_code == 200, to_idp.text
    link = re.search(r'id="continue" class="button" href="([^"]+)"', to_idp.text)
    assert link, to_idp.text
    idp_url = html.unescape(link.group(1))
    assert idp_url.startswith(str(setup.idp.base_url).rstrip("/") + "/oauth/authorize?")
    # At the IdP: its own login page, password and TOTP.
    idp_base = str(setup.idp.base_url).rstrip("/")
    assert browser.get(idp_url).headers["location"] == "/login"
    idp_form = browser.get(f"{idp_base}/login")
    account = setup.idp_account
    step = browser.post(
        f"{idp_base}/login",
        data={
            "tenant": account.tenant,
            "username": account.username,
            "password": account.password,
            "csrf": csrf_of(idp_form),
        },
    )
    assert step.headers["location"] == "/login/mfa"
    mfa = browser.get(f"{idp_base}/login/mfa")
    assert account.totp_secret is not None
    back = browser.post(
        f"{idp_base}/login/mfa",
        data={"otp": current_code(account.totp_secret), "csrf": csrf_of(mfa)},
    )
    callback = back.headers["location"]
    assert callback.startswith(str(setup.rp.base_url).rstrip("/") + "/login/sso/callback?")
    return browser, browser.get(callback), verifier


def test_federated_login_with_mfa_at_the_idp(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    setup = federate(make_database, urls, kms, serve_app)
    browser, answer, verifier = sign_in_via_idp(setup)
    try:
        assert answer.status_code == 303, answer.text
        location = answer.headers["location"]
        assert location.startswith(REDIRECT_URI + "?code=")
        tokens = exchange_code(browser, code_from(location), verifier).json()
    finally:
        browser.close()
    claims = pyjwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["sub"] == str(setup.local_user)  # the RP's own user, not the IdP's
    assert claims["amr"] == ["fed", "mfa"]
    assert claims["iss"] == str(setup.rp.base_url).rstrip("/")


def test_idp_without_enough_mfa_still_needs_our_second_factor(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    # Only hardware keys at the IdP count; its TOTP does not, so ours is required.
    setup = federate(make_database, urls, kms, serve_app, mfa_amr=["hwk"])
    browser, answer, _ = sign_in_via_idp(setup)
    browser.close()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login/enroll"  # no local factor yet: enroll


def test_unlinked_idp_account_is_refused(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    setup = federate(make_database, urls, kms, serve_app, link=False)
    browser, answer, _ = sign_in_via_idp(setup)
    browser.close()
    assert answer.status_code == 401
    assert "location" not in answer.headers
    [event] = recorded(urls, setup.tenant.id, Action.FEDERATED_LOGIN_FAILED)
    assert event["details"]["reason"] == "this IdP account is not linked to a user here"
    assert event["resource"]["type"] == "identity_provider"


def test_sso_needs_a_configured_idp(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    rp = serve_app()
    account = provision(urls, kms)
    with httpx.Client(base_url=rp.base_url) as browser:
        begin(browser)
        form = browser.get("/login")
        refused = browser.post("/login/sso", data={"tenant": account.tenant, "csrf": csrf_of(form)})
        assert refused.status_code == 400
        assert "not set up" in refused.text
        forged = browser.get("/login/sso/callback?code=x&state=forged")
        assert forged.status_code == 400


def test_callback_with_a_forged_state_is_refused(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    setup = federate(make_database, urls, kms, serve_app)
    with httpx.Client(base_url=setup.rp.base_url) as browser:
        begin(browser)
        form = browser.get("/login")
        started = browser.post(
            "/login/sso", data={"tenant": setup.tenant.slug, "csrf": csrf_of(form)}
        )
        assert started.status_code == 200  # the flow now waits at the IdP
        forged = browser.get("/login/sso/callback?code=stolen&state=forged")
        assert forged.status_code == 400
        assert "location" not in forged.headers


def test_an_idp_acr_can_vouch_for_mfa(
    make_database: Callable[..., DatabaseUrls],
    urls: DatabaseUrls,
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    # Its amr values are not trusted here, but its acr for MFA is.
    setup = federate(
        make_database, urls, kms, serve_app, mfa_amr=[], mfa_acr=["urn:ramparts:acr:mfa"]
    )
    browser, answer, _ = sign_in_via_idp(setup)
    browser.close()
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(REDIRECT_URI + "?code=")
