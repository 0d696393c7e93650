"""Protocol rules of RFC 6749 and OIDC logout, over a live server and real PostgreSQL:
a replayed code revokes what it issued, logout needs the user's confirmation, and no OAuth
endpoint accepts a parameter twice."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.keys import load_key_ring
from tests.audit.trail import recorded
from tests.identity.helpers import (
    CLIENT_ID,
    REDIRECT_URI,
    Account,
    authorize_path,
    bearer,
    code_from,
    exchange_code,
    log_in,
    next_code,
    obtain_tokens,
    provision,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


@pytest.fixture
def account(urls: DatabaseUrls, kms: Kms) -> Account:
    return provision(urls, kms)


def code_for(server: httpx.Client, account: Account, otp: str | None = None) -> tuple[str, str]:
    path, verifier = authorize_path(scope="openid profile")
    with httpx.Client(base_url=server.base_url) as browser:
        final = log_in(browser, path, account, otp=otp)
    return code_from(final.headers["location"]), verifier


def refresh(server: httpx.Client, token: str) -> httpx.Response:
    return server.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT_ID},
    )


def works(server: httpx.Client, access_token: str) -> bool:
    return server.get("/oauth/userinfo", headers=bearer(access_token)).status_code == 200


def code_body(code: str, verifier: str) -> list[tuple[str, str]]:
    return [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
        ("code_verifier", verifier),
    ]


# Finding 7: a replayed authorization code revokes the tokens it issued (RFC 6749 4.1.2).


def test_a_replayed_code_revokes_every_token_it_issued(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    code, verifier = code_for(server, account)
    first = exchange_code(server, code, verifier).json()
    rotated = refresh(server, first["refresh_token"]).json()  # the family grew by one
    assert works(server, first["access_token"])
    assert works(server, rotated["access_token"])

    replay = exchange_code(server, code, verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # On the very next request: the access tokens of the family, first and rotated, are dead,
    # and so is the refresh token the legitimate client holds now.
    assert not works(server, first["access_token"])
    assert not works(server, rotated["access_token"])
    assert refresh(server, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    [event] = recorded(urls, account.tenant_id, Action.AUTHORIZATION_CODE_REUSED)
    assert event["decision"] == "deny"
    assert event["details"]["family_revoked"] is True
    assert code not in str(event)


REPLAYS: dict[str, Callable[[str, str], dict[str, str]]] = {
    "no verifier": lambda code, _: {"code": code, "code_verifier": ""},
    "malformed verifier": lambda code, _: {"code": code, "code_verifier": "short"},
    "another client": lambda code, v: {"code": code, "code_verifier": v, "client_id": "nobody"},
    "no client": lambda code, v: {"code": code, "code_verifier": v, "client_id": ""},
    "refresh grant, code": lambda code, _: {"grant_type": "refresh_token", "code": code},
    "refresh grant, as token": lambda code, _: {
        "grant_type": "refresh_token",
        "refresh_token": code,
    },
    "unknown grant": lambda code, v: {"grant_type": "password", "code": code, "code_verifier": v},
    "service grant": lambda code, _: {"grant_type": "client_credentials", "code": code},
}


@pytest.mark.parametrize("variant", sorted(REPLAYS))
def test_a_replay_revokes_the_tokens_whatever_else_is_wrong_with_it(
    server: httpx.Client, account: Account, urls: DatabaseUrls, variant: str
) -> None:
    """RFC 6749 4.1.2: any second use of a code is denied and revokes what it issued, even when
    the replay would be refused anyway (no verifier, another client, another grant type); the
    stranger learns nothing more than invalid_grant."""
    code, verifier = code_for(server, account)
    first = exchange_code(server, code, verifier).json()
    assert works(server, first["access_token"])

    fields = {
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        **REPLAYS[variant](code, verifier),
    }
    replay = server.post("/oauth/token", data={k: v for k, v in fields.items() if v})
    assert replay.status_code == 400, replay.text
    assert replay.json() == {
        "error": "invalid_grant",
        "error_description": "unknown, expired or already used code",
    }
    assert not works(server, first["access_token"])
    assert refresh(server, first["refresh_token"]).json()["error"] == "invalid_grant"
    [event] = recorded(urls, account.tenant_id, Action.AUTHORIZATION_CODE_REUSED)
    assert event["details"]["family_revoked"] is True


def test_a_replay_racing_the_exchange_still_revokes_its_tokens(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Two redemptions at once: whichever wins, its tokens must not outlive the other."""
    for _ in range(3):
        code, verifier = code_for(server, provision(urls, kms))
        answers: list[httpx.Response] = []
        start = threading.Barrier(2)

        def redeem(
            code: str = code,
            verifier: str = verifier,
            start: threading.Barrier = start,
            answers: list[httpx.Response] = answers,
        ) -> None:
            with httpx.Client(base_url=server.base_url) as own:
                start.wait()
                answers.append(exchange_code(own, code, verifier))

        threads = [threading.Thread(target=redeem) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(a.status_code for a in answers) == [200, 400]
        [won] = [a.json() for a in answers if a.status_code == 200]
        assert not works(server, won["access_token"])
        assert refresh(server, won["refresh_token"]).json()["error"] == "invalid_grant"


# Finding 8: logout is confirmed by the user in the browser that asked for it.


def logout_ticket(page: httpx.Response) -> str:
    match = re.search(r'name="ticket" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_logout_request_alone_ends_nothing(
    server: httpx.Client, account: Account, method: str
) -> None:
    tokens = obtain_tokens(server, account)
    params = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": "https://client.example/",
        "state": "bye",
    }
    with httpx.Client(base_url=server.base_url) as anyone:
        if method == "GET":
            asked = anyone.get("/oauth/logout", params=params)
        else:
            asked = anyone.post("/oauth/logout", data=params)
    assert asked.status_code == 200
    assert "location" not in asked.headers
    assert 'action="/oauth/logout/confirm"' in asked.text
    assert works(server, tokens["access_token"])
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_a_confirmation_from_another_browser_is_refused(
    server: httpx.Client, account: Account
) -> None:
    tokens = obtain_tokens(server, account)
    with httpx.Client(base_url=server.base_url) as attacker:
        shown = attacker.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
    ticket = logout_ticket(shown)
    # The ticket is in the page; the cookie it is bound to stayed in the attacker's jar.
    with httpx.Client(base_url=server.base_url) as victim:
        forced = victim.post("/oauth/logout/confirm", data={"ticket": ticket})
        assert forced.status_code == 400
        forged = victim.post("/oauth/logout/confirm", data={"ticket": "x" * 60})
        assert forged.status_code == 400
    assert works(server, tokens["access_token"])
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_confirmed_logout_ends_only_the_sign_in_of_the_hint_and_redirects(
    server: httpx.Client, account: Account, urls: DatabaseUrls
) -> None:
    older = obtain_tokens(server, account)
    assert account.totp_secret is not None
    tokens = obtain_tokens(server, account, otp=next_code(account.totp_secret))
    sid = claims_of(tokens["id_token"])["sid"]
    assert sid != claims_of(older["id_token"])["sid"]
    with httpx.Client(base_url=server.base_url) as browser:
        shown = browser.get(
            "/oauth/logout",
            params={
                "id_token_hint": tokens["id_token"],
                "post_logout_redirect_uri": "https://client.example/",
                "state": "bye",
            },
        )
        # The confirmation form ends at the client: the CSP's form-action must allow it.
        assert "https://client.example" in shown.headers["content-security-policy"]
        done = browser.post("/oauth/logout/confirm", data={"ticket": logout_ticket(shown)})
    assert done.status_code == 303
    assert done.headers["location"] == "https://client.example/?state=bye"
    assert not works(server, tokens["access_token"])
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    # The user's other sign-in at the same client goes on: a hint ends its own session only.
    assert works(server, older["access_token"])
    assert refresh(server, older["refresh_token"]).status_code == 200
    [ended] = recorded(urls, account.tenant_id, Action.SESSION_ENDED)
    assert ended["resource"]["id"] == sid
    assert ended["details"] == {"reason": "logout", "ended": True}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def resigned(urls: DatabaseUrls, kms: Kms, token: str, **changes: object) -> str:
    """`token` with its claims changed (None removes one), signed with the server's own
    current key: only the claims, never the signature, make the difference."""

    async def run() -> str:
        database = Database(urls.app, pool_size=1)
        try:
            async with database.session() as session:
                ring = await load_key_ring(session, overlap=timedelta(minutes=5))
        finally:
            await database.dispose()
        claims = {**claims_of(token), **changes}
        key = ring.signing_key(kms)
        header = {"typ": "JWT", "alg": "ES256", "kid": key.kid}
        present = {name: value for name, value in claims.items() if value is not None}
        return jwt.encode(header, present, key, algorithms=["ES256"])

    return asyncio.run(run())


def stale_hints(urls: DatabaseUrls, kms: Kms, id_token: str) -> dict[str, str]:
    day = 24 * 3600
    issued = int(time.time()) - 13 * 3600  # the sign-in lasts 12 hours at most
    return {
        "older than a sign-in lasts": resigned(urls, kms, id_token, iat=issued, exp=issued + 300),
        "issued in the future": resigned(urls, kms, id_token, iat=int(time.time()) + day),
        "no sid": resigned(urls, kms, id_token, sid=None),
        "sid of no session": resigned(urls, kms, id_token, sid=str(uuid.uuid4())),
    }


def refused_logout(server: httpx.Client, hint: str) -> None:
    with httpx.Client(base_url=server.base_url) as anyone:
        asked = anyone.get("/oauth/logout", params={"id_token_hint": hint})
        assert asked.status_code == 400, asked.text
        assert 'name="ticket"' not in asked.text
        assert "_logout" not in str(asked.headers.get("set-cookie"))


def test_a_stale_or_unbound_hint_is_refused(
    server: httpx.Client, account: Account, urls: DatabaseUrls, kms: Kms
) -> None:
    tokens = obtain_tokens(server, account)
    resigned_fresh = resigned(urls, kms, tokens["id_token"])
    with httpx.Client(base_url=server.base_url) as browser:  # the helper's signing is sound
        assert (
            'name="ticket"'
            in browser.get("/oauth/logout", params={"id_token_hint": resigned_fresh}).text
        )
    for reason, hint in stale_hints(urls, kms, tokens["id_token"]).items():
        try:
            refused_logout(server, hint)
        except AssertionError as exc:
            raise AssertionError(reason) from exc
    assert works(server, tokens["access_token"])


@pytest.mark.parametrize("ended_by", ["revocation", "logout"])
def test_a_hint_whose_sign_in_is_over_is_refused(
    server: httpx.Client, account: Account, ended_by: str
) -> None:
    tokens = obtain_tokens(server, account)
    if ended_by == "revocation":
        server.post(
            "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": CLIENT_ID}
        )
    else:
        with httpx.Client(base_url=server.base_url) as browser:
            shown = browser.get("/oauth/logout", params={"id_token_hint": tokens["id_token"]})
            browser.post("/oauth/logout/confirm", data={"ticket": logout_ticket(shown)})
    assert not works(server, tokens["access_token"])
    refused_logout(server, tokens["id_token"])


# Finding 9: a parameter sent twice is refused at every OAuth endpoint (RFC 6749 3.1, 3.2).


def test_a_repeated_token_parameter_is_refused_and_changes_nothing(
    server: httpx.Client, account: Account
) -> None:
    code, verifier = code_for(server, account)
    for repeated in ("code", "grant_type", "code_verifier", "client_id", "redirect_uri"):
        body = code_body(code, verifier)
        body.append(next(pair for pair in body if pair[0] == repeated))  # even the same value
        answer = server.post("/oauth/token", content=urlencode(body), headers=FORM)
        assert answer.status_code == 400, repeated
        assert answer.json()["error"] == "invalid_request"
        assert repeated in answer.json()["error_description"]
    in_query = server.post(
        f"/oauth/token?{urlencode({'code': code})}",
        content=urlencode(code_body(code, verifier)),
        headers=FORM,
    )
    assert in_query.status_code == 400
    assert in_query.json()["error"] == "invalid_request"
    # None of those touched the code: it still redeems, once.
    tokens = exchange_code(server, code, verifier)
    assert tokens.status_code == 200, tokens.text
    twice = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens.json()["refresh_token"]),
        ("refresh_token", "a.b"),
        ("client_id", CLIENT_ID),
    ]
    answer = server.post("/oauth/token", content=urlencode(twice), headers=FORM)
    assert answer.json()["error"] == "invalid_request"
    assert refresh(server, tokens.json()["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    ("repeated", "again"),
    [
        ("client_id", CLIENT_ID),
        ("client_id", "other-client"),
        ("redirect_uri", REDIRECT_URI),
        ("redirect_uri", "https://evil.example/cb"),
    ],
)
def test_authorize_with_an_ambiguous_client_shows_an_error_page(
    server: httpx.Client, repeated: str, again: str
) -> None:
    path, _ = authorize_path(state="s-1")
    query = parse_qs(urlsplit(path).query)
    pairs = [(k, v[0]) for k, v in query.items()]
    pairs.insert(0, (repeated, again))  # first or last, a parser would pick one of them
    answer = server.get(f"/oauth/authorize?{urlencode(pairs)}")
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize(
    "repeated",
    ["scope", "state", "code_challenge", "code_challenge_method", "response_type", "nonce"],
)
def test_authorize_refuses_other_repeated_parameters_back_to_the_client(
    server: httpx.Client, repeated: str
) -> None:
    path, _ = authorize_path(state="s-1", nonce="n-1")
    pairs = [(k, v[0]) for k, v in parse_qs(urlsplit(path).query).items()]
    pairs.append(next(pair for pair in pairs if pair[0] == repeated))
    answer = server.get(f"/oauth/authorize?{urlencode(pairs)}")
    assert answer.status_code == 303
    assert "set-cookie" not in answer.headers  # no login flow began
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"]
    if repeated != "state":
        assert query["state"] == ["s-1"]
    else:
        assert "state" not in query


def test_revocation_refuses_a_repeated_token_and_revokes_nothing(
    server: httpx.Client, account: Account
) -> None:
    tokens = obtain_tokens(server, account)
    body = [
        ("token", tokens["access_token"]),
        ("token", tokens["refresh_token"]),
        ("client_id", CLIENT_ID),
    ]
    answer = server.post("/oauth/revoke", content=urlencode(body), headers=FORM)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert works(server, tokens["access_token"])
    assert refresh(server, tokens["refresh_token"]).status_code == 200


def test_logout_refuses_repeated_parameters(server: httpx.Client, account: Account) -> None:
    tokens = obtain_tokens(server, account)
    pairs = [("id_token_hint", tokens["id_token"]), ("id_token_hint", tokens["id_token"])]
    assert server.get(f"/oauth/logout?{urlencode(pairs)}").status_code == 400
    posted = server.post("/oauth/logout", content=urlencode(pairs), headers=FORM)
    assert posted.status_code == 400
    state_twice = [("id_token_hint", tokens["id_token"]), ("state", "a"), ("state", "b")]
    assert server.get(f"/oauth/logout?{urlencode(state_twice)}").status_code == 400
    assert works(server, tokens["access_token"])


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_refuses_repeated_parameters(
    server: httpx.Client, account: Account, method: str
) -> None:
    tokens = obtain_tokens(server, account)
    pairs = urlencode([("claims", "a"), ("claims", "b")])
    headers: dict[str, Any] = bearer(tokens["access_token"])
    if method == "GET":
        answer = server.get(f"/oauth/userinfo?{pairs}", headers=headers)
    else:
        answer = server.post("/oauth/userinfo", content=pairs, headers={**headers, **FORM})
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:ramparts:problem:invalid-request"


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/oauth/jwks"])
def test_discovery_and_keys_refuse_repeated_parameters(server: httpx.Client, path: str) -> None:
    assert server.get(f"{path}?v=1").status_code == 200  # an unknown parameter is ignored
    answer = server.get(f"{path}?v=1&v=2")
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:ramparts:problem:invalid-request"
