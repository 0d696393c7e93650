"""The full OIDC code + PKCE flow, driven by authlib's client from the discovery document,
with the ID token checked by an independent JOSE library (PyJWT) against the JWKS."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt as pyjwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.identity.helpers import (
    CLIENT_ID,
    REDIRECT_URI,
    Account,
    code_from,
    exchange_code,
    log_in,
    provision,
)


@pytest.fixture
def account(urls: DatabaseUrls, kms: Kms) -> Account:
    return provision(urls, kms)


@pytest.fixture
def server(serve_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_app()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(server: httpx.Client, **overrides: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid profile",
        "state": "s-1",
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"{server.base_url}/oauth/authorize?{urlencode(params)}", verifier


def test_code_flow_with_pkce_end_to_end(
    server: httpx.Client, account: Account, request: pytest.FixtureRequest
) -> None:
    meta = server.get("/.well-known/openid-configuration").json()
    issuer = str(server.base_url).rstrip("/")
    assert meta["issuer"] == issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "implicit" not in meta["grant_types_supported"]
    assert "password" not in meta["grant_types_supported"]

    nonce = secrets.token_urlsafe(16)
    oauth = OAuth2Client(
        client_id=CLIENT_ID,
        token_endpoint_auth_method="none",
        redirect_uri=REDIRECT_URI,
        scope="openid profile",
        code_challenge_method="S256",
    )
    request.addfinalizer(oauth.close)
    verifier = secrets.token_urlsafe(48)
    url, state = oauth.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    with httpx.Client(base_url=server.base_url) as browser:
        final = log_in(browser, url, account)
    assert final.status_code == 303
    location = final.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    assert query["iss"] == [issuer]  # RFC 9207

    token = oauth.fetch_token(
        meta["token_endpoint"], authorization_response=location, code_verifier=verifier
    )
    assert token["token_type"] == "Bearer"
    assert 0 < token["expires_in"] <= 600

    jwks = pyjwt.PyJWKClient(meta["jwks_uri"])
    id_key = jwks.get_signing_key_from_jwt(token["id_token"])
    id_claims = pyjwt.decode(
        token["id_token"], id_key.key, algorithms=["ES256"], audience=CLIENT_ID, issuer=issuer
    )
    assert id_claims["nonce"] == nonce
    assert id_claims["sub"] == str(account.user_id)
    assert id_claims["tenant"] == str(account.tenant_id)
    assert id_claims["amr"] == ["pwd", "otp", "mfa"]
    assert id_claims["acr"] == "urn:ramparts:acr:mfa"

    access_header = pyjwt.get_unverified_header(token["access_token"])
    assert access_header["typ"] == "at+jwt"
    access_key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = pyjwt.decode(
        token["access_token"],
        access_key.key,
        algorithms=["ES256"],
        audience=f"{issuer}/api",
        issuer=issuer,
    )
    assert set(claims) >= {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "tenant",
        "roles",
        "amr",
        "acr",
    }
    assert claims["exp"] - claims["iat"] <= 600
    assert claims["roles"] == ["buyer"]

    info = server.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert info.status_code == 200
    assert info.json()["sub"] == str(account.user_id)


def code_for(server: httpx.Client, account: Account, **overrides: str) -> tuple[str, str]:
    url, verifier = authorize_url(server, **overrides)
    with httpx.Client(base_url=server.base_url) as browser:
        final = log_in(browser, url, account)
    return code_from(final.headers["location"]), verifier


def test_code_is_single_use(server: httpx.Client, account: Account) -> None:
    code, verifier = code_for(server, account)
    assert exchange_code(server, code, verifier).status_code == 200
    again = exchange_code(server, code, verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_verifier": secrets.token_urlsafe(48)},
        {"redirect_uri": "https://client.example/other"},
    ],
    ids=["wrong-verifier", "wrong-redirect"],
)
def test_a_failed_exchange_burns_the_code(
    server: httpx.Client, account: Account, overrides: dict[str, str]
) -> None:
    code, verifier = code_for(server, account)
    failed = exchange_code(server, code, verifier, **overrides)
    assert failed.json()["error"] == "invalid_grant"
    assert exchange_code(server, code, verifier).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": "code id_token"}, "unsupported_response_type"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
    ],
)
def test_bad_authorize_requests_are_refused_back_to_the_client(
    server: httpx.Client, overrides: dict[str, str], error: str
) -> None:
    url, _ = authorize_url(server, **overrides)
    response = server.get(url)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == [error]
    assert query["state"] == ["s-1"]
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "nobody"},
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": REDIRECT_URI + "/"},
        {"redirect_uri": REDIRECT_URI + "?x=1"},
    ],
)
def test_unknown_client_or_redirect_is_never_redirected_to(
    server: httpx.Client, account: Account, overrides: dict[str, str]
) -> None:
    url, _ = authorize_url(server, **overrides)
    response = server.get(url)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_no_implicit_or_password_grant(server: httpx.Client, account: Account) -> None:
    for grant in ("password", "implicit", ""):
        response = server.post(
            "/oauth/token",
            data={
                "grant_type": grant,
                "client_id": CLIENT_ID,
                "username": account.username,
                "password": account.password,
            },
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"
    # client_credentials is for service clients: a public client cannot authenticate for it.
    public = server.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "resource": "x"},
    )
    assert public.status_code == 401
    assert public.json()["error"] == "invalid_client"


def test_login_form_requires_the_flow_and_its_csrf_token(
    server: httpx.Client, account: Account
) -> None:
    url, _ = authorize_url(server)
    with httpx.Client(base_url=server.base_url) as browser:
        browser.get(url)
        forged = browser.post(
            "/login",
            data={
                "tenant": account.tenant,
                "username": account.username,
                "password": account.password,
                "csrf": "forged",
            },
        )
        assert forged.status_code == 400
    no_flow = server.post(
        "/login",
        data={
            "tenant": account.tenant,
            "username": account.username,
            "password": account.password,
            "csrf": "x",
        },
    )
    assert no_flow.status_code == 400
