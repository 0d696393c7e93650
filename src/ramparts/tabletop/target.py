"""The instance a drill plays against, as a person and an operator reach it: its URL, the demo
credentials its seed printed, people signed in through the real login (password, TOTP, PKCE
code), the webhook secret its PSP signs with, and, where the operator can reach it, its
database (for the checks that must look under the API: row-level security, triggers, grants).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import psycopg
import pyotp

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.tabletop.script import ScriptControl

__all__ = ["ApiSession", "DrillError", "Operator", "SignInError", "Target", "read_credentials"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: How long one request may take: an assistant turn with a model can take seconds.
REQUEST_TIMEOUT = 60.0
#: A session's access token this close to its expiry is renewed before the next request.
TOKEN_MARGIN_SECONDS = 60


class DrillError(Exception):
    """The drill itself cannot go on (the instance is unreachable, a credential is missing):
    a one-line reason, never a verdict on a control."""


class SignInError(DrillError):
    """A demo user could not sign in through the real login."""


@dataclass
class ApiSession:
    """One person signed in: an HTTP client holding their bearer token."""

    target: Target
    tenant: str
    username: str
    roles: tuple[str, ...]
    access_token: str
    refresh_token: str | None
    client: httpx.Client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self._keep_fresh()
        headers = {"Authorization": f"Bearer {self.access_token}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def _keep_fresh(self) -> None:
        """Access tokens live minutes and a drill can run longer: one close to its end is
        exchanged for a new pair (the refresh grant) or, when that is refused, the person
        signs in again, so a late step is not answered 401 for the drill's own sake."""
        if _expires_at(self.access_token) - time.time() > TOKEN_MARGIN_SECONDS:
            return
        tokens = self.target.refreshed(self.refresh_token) if self.refresh_token else None
        if tokens is None:
            tokens = self.target.tokens(self.username)
        self.access_token = str(tokens["access_token"])
        self.refresh_token = tokens.get("refresh_token")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def money(self, path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        """A money-moving POST, with the `Idempotency-Key` every one requires (fresh unless
        given)."""
        return self.post(path, json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})

    def assistant(self, message: str, conversation_id: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"message": message}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        return self.post("/api/assistant", json=body)


@dataclass(frozen=True)
class Operator:
    """What the instance's operator holds, when the drill is its operator (its own instance,
    or one whose home this shell's settings name): the environment in which `ramparts`
    commands act on it (its home, KMS, database and PSP), its KMS, and where its PSP answers
    (None: Stripe itself). The checks that can only be proved by an operator's act (a
    webhook secret rotated, a reconciliation run) use it; without one they cannot pass."""

    # Out of `repr`: the environment may hold the operator's credentials.
    env: Mapping[str, str] = field(repr=False)
    kms: Kms = field(repr=False)
    psp_api_base: str | None = None


@dataclass
class Target:
    """A running instance. `report` is its `seed-demo --json` report (the demo credentials);
    `urls` its database when reachable (owner and runtime role); `script` the file its
    scripted model replays, when it runs one this drill may write; `operator` what its
    operator holds, when the drill is its operator.

    `home` is its RAMPARTS_HOME and `environment` the settings it runs with (its `RAMPARTS_*`
    variables, and XDG_CONFIG_HOME, where its local KMS keeps its key file), where the drill
    knows them: what an operator's command (`ramparts drill`, `killswitch`, a second `serve`
    of the same install) needs to act on this instance. Secrets in it never go in a report."""

    base_url: str
    report: dict[str, Any] = field(repr=False)  # passwords and TOTP secrets
    urls: DatabaseUrls | None = None
    script: ScriptControl | None = None
    description: dict[str, str] = field(default_factory=dict)
    operator: Operator | None = None
    home: Path | None = None
    environment: dict[str, str] = field(default_factory=dict, repr=False)
    _sessions: dict[tuple[str, str], ApiSession] = field(default_factory=dict, repr=False)
    _last_step: dict[str, int] = field(default_factory=dict, repr=False)
    _clients: list[httpx.Client] = field(default_factory=list, repr=False)

    # --- who is there ---------------------------------------------------------------------

    @property
    def webhook_secret(self) -> str:
        secret = self.report.get("webhook_secret")
        if not isinstance(secret, str) or not secret:
            raise DrillError("the demo credentials carry no webhook_secret")
        return secret

    def tenant(self, slug: str) -> dict[str, Any]:
        for tenant in self.report.get("tenants", []):
            if tenant.get("slug") == slug:
                return dict(tenant)
        raise DrillError(f"the demo credentials have no tenant {slug!r}")

    def tenants(self) -> list[str]:
        return [str(t["slug"]) for t in self.report.get("tenants", [])]

    def user(self, username: str) -> dict[str, Any]:
        for user in self.report.get("users", []):
            if user.get("username") == username:
                return dict(user)
        raise DrillError(f"the demo credentials have no user {username!r}")

    def users_with(self, role: str, tenant: str) -> list[str]:
        """The demo users of `tenant` holding `role`, in the seed's order."""
        return [
            str(u["username"])
            for u in self.report.get("users", [])
            if u.get("tenant") == tenant and role in u.get("roles", [])
        ]

    def client(self) -> httpx.Client:
        """An anonymous client of the instance (no cookie jar shared with anyone), closed
        with the target at the latest."""
        client = httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT)
        self._clients.append(client)
        return client

    # --- signing in -----------------------------------------------------------------------

    def session(self, username: str) -> ApiSession:
        """`username` signed in (once per drill: later calls reuse the session)."""
        user = self.user(username)
        key = (str(user["tenant"]), username)
        if key not in self._sessions:
            self._sessions[key] = self.sign_in(username)
        return self._sessions[key]

    def sign_in(self, username: str, *, password: str | None = None) -> ApiSession:
        """A fresh sign-in of `username` as a person does it: the first-party client's
        authorization request (code flow, PKCE S256), the password form, the TOTP form, the
        code exchanged for tokens."""
        user = self.user(username)
        tokens = self._tokens(user, password=password)
        return ApiSession(
            target=self,
            tenant=str(user["tenant"]),
            username=username,
            roles=tuple(user.get("roles", ())),
            access_token=str(tokens["access_token"]),
            refresh_token=tokens.get("refresh_token"),
            client=self.client(),
        )

    def tokens(self, username: str) -> dict[str, Any]:
        """The token endpoint's answer for a fresh sign-in of `username`."""
        return self._tokens(self.user(username))

    def _tokens(self, user: dict[str, Any], *, password: str | None = None) -> dict[str, Any]:
        oidc = self.report.get("oidc_client") or {}
        client_id, redirect_uri = oidc.get("client_id"), oidc.get("redirect_uri")
        if not client_id or not redirect_uri:
            raise DrillError("the demo credentials carry no oidc_client")
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        who = f"{user['username']} of {user['tenant']}"
        with self.client() as browser:
            start = browser.get(f"/oauth/authorize?{query}")
            if start.status_code != 303:
                raise SignInError(f"{who}: authorize answered {start.status_code}")
            form = browser.get(start.headers["location"])
            answer = browser.post(
                "/login",
                data={
                    "tenant": user["tenant"],
                    "username": user["username"],
                    "password": password if password is not None else user["password"],
                    "csrf": _csrf(form),
                },
            )
            if answer.status_code != 303 or not answer.headers["location"].endswith("/mfa"):
                raise SignInError(f"{who}: the password was refused ({answer.status_code})")
            mfa = browser.get(answer.headers["location"])
            final = browser.post(
                answer.headers["location"],
                data={"otp": self.code_for(str(user["username"])), "csrf": _csrf(mfa)},
            )
            location = final.headers.get("location", "")
            code = parse_qs(urlsplit(location).query).get("code")
            if final.status_code != 303 or not code:
                raise SignInError(f"{who}: the second factor was refused ({final.status_code})")
            exchanged = browser.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code[0],
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "code_verifier": verifier,
                },
            )
        if exchanged.status_code != 200:
            raise SignInError(f"{who}: the code exchange answered {exchanged.status_code}")
        tokens: dict[str, Any] = exchanged.json()
        return tokens

    def refreshed(self, refresh_token: str) -> dict[str, Any] | None:
        """The token endpoint's answer to the refresh grant, or None when it refuses it."""
        client_id = (self.report.get("oidc_client") or {}).get("client_id", "")
        with self.client() as http:
            answer = http.post(
                "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token,
                    "client_id": client_id,
                },
            )
        if answer.status_code != 200:
            return None
        tokens: dict[str, Any] = answer.json()
        return tokens

    def code_for(self, username: str) -> str:
        """A TOTP code of `username` that no sign-in has used yet: not by this drill, nor by
        another process (an earlier drill), whose steps the instance's database knows."""
        secret = str(self.user(username)["totp_secret"])
        return self.totp(secret, used=self.used_step(username))

    def used_step(self, username: str) -> int:
        """The last TOTP step the instance accepted from `username`; -1 when its database is
        out of reach (then only this drill's own sign-ins are known)."""
        if self.urls is None or self.urls.owner_url is None:
            return -1
        user = self.user(username)
        tenant = str(self.tenant(str(user["tenant"]))["id"])
        try:
            with self.owner() as db, db.transaction():
                db.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                row = db.execute(
                    "SELECT c.last_step FROM totp_credentials c JOIN users u ON u.tenant_id = "
                    "c.tenant_id AND u.id = c.user_id WHERE c.tenant_id = %s AND u.username = %s",
                    (tenant, username),
                ).fetchone()
        except psycopg.Error:  # a sign-in does not need it: it risks a replayed step only
            return -1
        return int(row[0]) if row else -1

    def totp(self, secret: str, *, used: int = -1) -> str:
        """A code for `secret` that it has not used yet: a used step is refused (replay), and
        counts as a failed second factor, so a second sign-in within one step takes the next
        step's code (one step of drift is accepted), and a third waits for the clock. `used`:
        the last step the instance is known to have taken (see `used_step`)."""
        totp = pyotp.TOTP(secret)
        step = max(int(time.time()) // 30, self._last_step.get(secret, -1) + 1, used + 1)
        while step > int(time.time()) // 30 + 1:
            time.sleep(1)
        self._last_step[secret] = step
        return totp.at(step * 30)

    # --- under the API --------------------------------------------------------------------

    @contextmanager
    def owner(self) -> Iterator[psycopg.Connection[Any]]:
        """The database as its owner (autocommit), for checks that look under the API."""
        if self.urls is None or self.urls.owner_url is None:
            raise DrillError("the instance's database is not reachable from here")
        with psycopg.connect(libpq(self.urls.owner_url), autocommit=True) as conn:
            yield conn

    @contextmanager
    def runtime(self) -> Iterator[psycopg.Connection[Any]]:
        """The database as the runtime role the API uses (autocommit)."""
        if self.urls is None:
            raise DrillError("the instance's database is not reachable from here")
        with psycopg.connect(libpq(self.urls.app), autocommit=True) as conn:
            yield conn

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._sessions.clear()


def _expires_at(token: str) -> float:
    """A JWT's `exp` (read, not verified: only to know when to renew our own token); an
    unreadable one counts as never expiring, so the instance's answer decides."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return float("inf")


def _csrf(page: httpx.Response) -> str:
    match = _CSRF.search(page.text)
    if match is None:
        raise SignInError(f"the login page ({page.status_code}) carries no CSRF token")
    return match.group(1)


def read_credentials(path: Path) -> dict[str, Any]:
    """A `seed-demo --json` report (`demo-credentials.json`)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DrillError(f"cannot read the demo credentials {path}: {exc.strerror}") from None
    except ValueError:
        raise DrillError(f"{path} is not a seed-demo --json report") from None
    if not isinstance(report, dict) or not isinstance(report.get("users"), list):
        raise DrillError(f"{path} is not a seed-demo --json report")
    return report
