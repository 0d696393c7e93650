"""The buyer's payment page `GET /pay/{id}`: a signed-in page with no inline code, and the one
page whose CSP allows the PSP, with exactly the PSP's origins from the settings (PAY-1)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.headers import PSP_PAGE_HEADER
from ramparts.payments.browser import (
    STRIPE_JS,
    PspPageSources,
    psp_page_sources,
    stripe_js_url,
)
from ramparts.quotes.roles import BUYER
from ramparts.routes import Exempt, declares
from ramparts.web.middleware import CONTENT_SECURITY_POLICY, psp_page_policy
from tests.identity.helpers import provision
from tests.web.sessions_helpers import sign_in_web, web_app
from tests.web.test_edge import assert_security_headers

SANDBOX = "http://127.0.0.1:4242"
SANDBOX_PAGE_POLICY = (
    "default-src 'none'; "
    f"script-src 'self' {SANDBOX}; "
    "style-src 'self'; "
    "img-src 'self' data:; "
    "font-src 'self'; "
    f"connect-src 'self' {SANDBOX}; "
    f"frame-src {SANDBOX}; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "object-src 'none'"
)
# Every other kind of page and answer keeps the strict policy, byte for byte.
OTHER_PATHS = [
    "/",
    "/app/callback",
    "/app",
    "/login",
    "/healthz",
    "/static/pay.js",
    "/static/app.js",
    "/pay/not-a-payment-id",  # refused before the page: no PSP there either
    "/pay",
    "/pay/",
    f"/pay/{uuid.uuid4()}/more",
    "/no/such/route",
]


def _directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in parsed, f"{name} twice"
        parsed[name] = values
    return parsed


def test_the_page_policy_adds_the_psp_origins_and_nothing_else() -> None:
    assert psp_page_policy(psp_page_sources(SANDBOX)) == SANDBOX_PAGE_POLICY
    strict = _directives(CONTENT_SECURITY_POLICY)
    stripe = _directives(psp_page_policy(psp_page_sources(None)))
    assert stripe.pop("script-src") == [
        "'self'",
        "https://js.stripe.com",
        "https://*.js.stripe.com",
    ]
    assert stripe.pop("connect-src") == ["'self'", "https://api.stripe.com"]
    assert stripe.pop("frame-src") == [
        "https://js.stripe.com",
        "https://*.js.stripe.com",
        "https://hooks.stripe.com",
    ]
    del strict["script-src"], strict["connect-src"]
    assert stripe == strict  # default-src 'none', style-src 'self', frame-ancestors, ...


@pytest.mark.parametrize(
    "origin",
    ["'unsafe-inline'", "https://psp.example/path", "*", "https://a.example; script-src *", ""],
)
def test_the_page_policy_takes_origins_only(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        psp_page_policy(PspPageSources((origin,), (), ()))


def test_stripe_js_comes_from_the_psp() -> None:
    assert stripe_js_url(None) == STRIPE_JS == "https://js.stripe.com/v3/"
    assert stripe_js_url(SANDBOX) == f"{SANDBOX}/js.stripe.com/v3/"
    assert psp_page_sources("http://127.0.0.1:4242").scripts == (SANDBOX,)
    with pytest.raises(ValueError, match="http"):
        stripe_js_url("127.0.0.1:4242")


def _signed_in(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, **overrides: object
) -> httpx.Client:
    client = web_app(serve_app, urls, kms, **overrides)
    sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    return client


def test_the_payment_page_needs_a_session(serve_app: Callable[..., httpx.Client]) -> None:
    client = serve_app(psp_api_base=SANDBOX)
    payment = uuid.uuid4()
    page = client.get(f"/pay/{payment}")
    assert page.status_code == 303
    assert page.headers["location"] == f"/app/login?next=/pay/{payment}"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_payment_page_alone_allows_the_psp(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = _signed_in(serve_app, urls, kms, psp_api_base=SANDBOX)
    payment = uuid.uuid4()
    page = client.get(f"/pay/{payment}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == SANDBOX_PAGE_POLICY
    assert PSP_PAGE_HEADER not in page.headers  # the mark stays inside
    assert page.headers["cache-control"] == "no-store"
    assert_security_headers(page)
    html = page.text
    # No inline code: scripts by src only, no style attributes or elements, no handlers.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert (' src="/static/pay.js" defer', "") in scripts
    assert all(re.fullmatch(r' src="/static/[a-z]+\.js" defer', a) and not b for a, b in scripts)
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    # The page knows its payment and its session's CSRF token, nothing more: no token, no PSP
    # address, no key, no amount (those come from the API, to the signed-in payer only).
    assert f'data-payment-id="{payment}"' in html
    assert 'data-csrf="' in html
    assert "eyJ" not in html
    assert "127.0.0.1:4242" not in html
    assert "pk_" not in html
    # Labelled: the card's fieldset has a legend, the status is announced.
    assert "<legend>Card details</legend>" in html
    assert 'role="status"' in html
    assert 'role="alert"' in html
    # HEAD is GET without the body: the same policy.
    head = client.head(f"/pay/{payment}")
    assert head.headers["content-security-policy"] == SANDBOX_PAGE_POLICY
    for path in OTHER_PATHS:
        other = client.get(path)
        assert other.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert PSP_PAGE_HEADER not in other.headers


def test_a_request_cannot_ask_for_the_psp_policy(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """The mark is a response header set by the page's own route; a request carrying it, or
    a Host or Origin naming a PSP, changes nothing."""
    client = _signed_in(serve_app, urls, kms, psp_api_base=SANDBOX)
    for path in ("/", "/login", "/no/such/route"):
        response = client.get(
            path, headers={PSP_PAGE_HEADER: "1", "Origin": SANDBOX, "Referer": SANDBOX}
        )
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    page = client.get(f"/pay/{uuid.uuid4()}", headers={"Origin": "https://evil.example"})
    assert page.headers["content-security-policy"] == SANDBOX_PAGE_POLICY
    assert "evil.example" not in page.headers["content-security-policy"]


def _marking_route(app: FastAPI) -> None:
    async def marked() -> Response:
        return Response("x", headers={PSP_PAGE_HEADER: "1"})

    app.add_api_route("/marked", marked, openapi_extra=declares(Exempt.PUBLIC))


def test_without_a_psp_the_page_policy_names_stripe_only(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """No API base in the settings: the PSP is Stripe, and the policy says Stripe's origins."""
    client = web_app(serve_app, urls, kms, app_hook=_marking_route)
    sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    page = client.get(f"/pay/{uuid.uuid4()}")
    policy = _directives(page.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", "https://js.stripe.com", "https://*.js.stripe.com"]
    assert policy["connect-src"] == ["'self'", "https://api.stripe.com"]
    marked = client.get("/marked")
    assert marked.headers["content-security-policy"] == page.headers["content-security-policy"]
    assert PSP_PAGE_HEADER not in marked.headers
