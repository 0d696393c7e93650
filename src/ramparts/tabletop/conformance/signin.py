"""A sign-in driven one step at a time, as a browser does it, so a check can stop where it
wants: after the password (does it already give a code?), at wrong second factors (does the
account lock?), or with a second factor of its choosing.

On a loopback instance the browser connects from a loopback address of its own (any 127/8
address is this machine): the failures a check provokes on purpose then count against that
address only, never against the address every other drill signs in from.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
import time
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pyotp

from ramparts.tabletop.target import REQUEST_TIMEOUT, DrillError, SignInError, Target

__all__ = ["Browser", "code_in", "discovery", "wrong_code"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _own_loopback_address(base_url: str) -> str | None:
    host = urlsplit(base_url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return None
    return f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def discovery(target: Target) -> dict[str, Any]:
    """The instance's OpenID Provider metadata."""
    with target.client() as http:
        answer = http.get("/.well-known/openid-configuration")
    if answer.status_code != 200:
        raise DrillError(f"OIDC discovery answered {answer.status_code}")
    meta: dict[str, Any] = answer.json()
    return meta


def wrong_code(secret: str) -> str:
    """A six-digit code that is none of the codes valid within two steps of now."""
    totp = pyotp.TOTP(secret)
    now = int(time.time())
    valid = {totp.at(now + 30 * drift) for drift in range(-2, 3)}
    while True:
        code = f"{secrets.randbelow(10**6):06d}"
        if code not in valid:
            return code


def code_in(answer: httpx.Response) -> str | None:
    """The authorization code a redirect carries, if it carries one."""
    location = answer.headers.get("location", "")
    found = parse_qs(urlsplit(location).query).get("code")
    return found[0] if found else None


class Browser:
    """One browser running the first-party client's sign-in (code flow with PKCE S256)."""

    def __init__(self, target: Target, *, own_address: bool = False) -> None:
        self.target = target
        address = _own_loopback_address(target.base_url) if own_address else None
        self.address = address
        transport = httpx.HTTPTransport(local_address=address) if address else None
        self.http = httpx.Client(
            base_url=target.base_url, timeout=REQUEST_TIMEOUT, transport=transport
        )
        self._verifier = ""
        oidc = target.report.get("oidc_client") or {}
        self.client_id = str(oidc.get("client_id", ""))
        self.redirect_uri = str(oidc.get("redirect_uri", ""))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def authorize_query(self, **changes: str | None) -> str:
        """The authorization request's query (a fresh PKCE pair), with `changes` applied
        (a value of None drops that parameter)."""
        self._verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(self._verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **changes,
        }
        return urlencode({k: v for k, v in params.items() if v is not None})

    def start(self) -> None:
        """A fresh flow, up to the password page."""
        answer = self.http.get(f"/oauth/authorize?{self.authorize_query()}")
        if answer.status_code != 303:
            raise SignInError(f"authorize answered {answer.status_code}")
        self.http.get(answer.headers["location"])

    def password(self, username: str, password: str | None = None) -> httpx.Response:
        user = self.target.user(username)
        form = self.http.get("/login")
        return self.http.post(
            "/login",
            data={
                "tenant": user["tenant"],
                "username": username,
                "password": password if password is not None else user["password"],
                "csrf": _csrf(form),
            },
        )

    def second_factor(self, code: str) -> httpx.Response:
        page = self.http.get("/login/mfa")
        return self.http.post("/login/mfa", data={"otp": code, "csrf": _csrf(page)})

    def exchange(self, code: str) -> dict[str, Any]:
        """The token endpoint's answer for the code this flow got."""
        answer = self.http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": self._verifier,
            },
        )
        if answer.status_code != 200:
            raise SignInError(f"the code exchange answered {answer.status_code}")
        tokens: dict[str, Any] = answer.json()
        return tokens

    def sign_in(self, username: str, code: str) -> httpx.Response:
        """Password then `code`: the second factor's answer (303 with a code when accepted)."""
        self.start()
        answer = self.password(username)
        if answer.status_code != 303 or not answer.headers["location"].endswith("/mfa"):
            raise SignInError(f"{username}: the password was refused ({answer.status_code})")
        return self.second_factor(code)


def _csrf(page: httpx.Response) -> str:
    match = _CSRF.search(page.text)
    if match is None:
        raise SignInError(f"the sign-in page ({page.status_code}) carries no CSRF token")
    return match.group(1)
