"""Live checks of the identity controls: how people sign in (ID-1), what their tokens are and
how the API and the token endpoint treat forged and reused ones (ID-2). Service clients
(ID-3) and secrets (ID-4) have modules of their own, registered here."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ramparts.audit.events import Action
from ramparts.identity.lockout import SECOND_FACTOR_FREE_FAILURES
from ramparts.identity.views.second_factor import MAX_MFA_FAILURES
from ramparts.tabletop.conformance import secrets_check, service_clients
from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome, check
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.forgery import forgeries, read_jwt
from ramparts.tabletop.conformance.operating import operator_command, redacted_tail
from ramparts.tabletop.conformance.people import admin_of, spare_people, tenant_id
from ramparts.tabletop.conformance.reads import list_routes, readable_route
from ramparts.tabletop.conformance.signin import Browser, code_in, discovery, wrong_code
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["secrets_kept", "service_to_service", "signing_in", "tokens"]

#: The longest an access token may live (CONTROLS.md ID-1).
MAX_ACCESS_SECONDS = 600
#: What a second factor adds to a token's `amr` (RFC 8176: one-time password, hardware key).
SECOND_FACTORS = frozenset({"otp", "hwk", "mfa"})
TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant")
ASYMMETRIC = frozenset({"ES256", "EdDSA"})
#: Where a `jku`/`x5u` forgery would send a verifier that follows it (nothing listens).
ATTACKER_URL = "http://127.0.0.1:9"
#: How long the instance may serve its cached key ring after a rotation (it reloads it every
#: 15 s), with a margin.
KEY_RING_SECONDS = 25.0


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def _authorize_refused(answer: httpx.Response) -> tuple[bool, str]:
    """Whether an authorization request was refused (no code, no token) and how."""
    location = urlsplit(answer.headers.get("location", ""))
    given = parse_qs(location.query) | parse_qs(location.fragment)
    issued = "code" in given or "access_token" in given
    error = given.get("error", [""])[0]
    refused = not issued and (bool(error) or 400 <= answer.status_code < 500)
    return refused, f"{answer.status_code} {error or '(no error named)'}"


@check("ID-1")
def signing_in(target: Target) -> Outcome:
    f = Findings(
        "discovery offers only the code flow with PKCE S256 (no implicit, no password grant) "
        "and the endpoints refuse them; a password alone gets no code; access tokens live "
        f"≤ {MAX_ACCESS_SECONDS} s and carry the second factor; repeated wrong second factors "
        "lock the account (audited)"
    )
    meta = discovery(target)
    _offered_flows(f, meta)
    _refused_flows(f, target)
    tenant = target.tenants()[-1]
    person = spare_people(target, tenant)[0]
    started = now()
    _lockout(f, target, person)
    locks = audit_events(
        target.session(admin_of(target, tenant)),
        since=started,
        action=Action.SECOND_FACTOR_LOCKED.value,
    )
    if f.expect(bool(locks), f"{len(locks)} lock event(s) in the trail", "the lock is not audited"):
        f.evidence += cited(locks)
    tokens = _unlock_and_sign_in(f, target, person)
    _token_lifetime(f, tokens)
    f.saw(f"acr values offered: {', '.join(meta.get('acr_values_supported', [])) or 'none'}")
    return f.outcome(
        f"code flow + S256 only; implicit, plain PKCE and the password grant refused; "
        f"{person}'s password alone led to the second factor, {SECOND_FACTOR_FREE_FAILURES} "
        "wrong codes locked it (even the right code then refused, audited); its token lives "
        f"{tokens.get('expires_in')} s"
    )


def _offered_flows(f: Findings, meta: dict[str, Any]) -> None:
    kinds = meta.get("response_types_supported")
    grants = meta.get("grant_types_supported") or []
    pkce = meta.get("code_challenge_methods_supported")
    f.expect(kinds == ["code"], f"response_types_supported {kinds}", f"response types {kinds}")
    f.expect(
        not {"password", "implicit"} & set(grants),
        f"grant_types_supported {grants}",
        f"discovery offers {sorted({'password', 'implicit'} & set(grants))}",
    )
    f.expect(pkce == ["S256"], f"code_challenge_methods_supported {pkce}", f"PKCE methods {pkce}")


def _refused_flows(f: Findings, target: Target) -> None:
    person = spare_people(target, target.tenants()[-1])[-1]
    with Browser(target) as browser:
        for label, changes in (
            ("response_type=token (implicit)", {"response_type": "token"}),
            ("code_challenge_method=plain", {"code_challenge_method": "plain"}),
            ("no PKCE", {"code_challenge": None, "code_challenge_method": None}),
        ):
            answer = browser.http.get(f"/oauth/authorize?{browser.authorize_query(**changes)}")
            refused, how = _authorize_refused(answer)
            f.expect(refused, f"authorize {label} → {how}", f"authorize with {label} not refused")
        user = target.user(person)
        answer = browser.http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": browser.client_id,
                "username": person,
                "password": user["password"],
            },
        )
    error = answer.json().get("error") if answer.status_code < 500 else None
    f.expect(
        answer.status_code == 400 and "access_token" not in answer.text,
        f"token grant_type=password with {person}'s real password → {answer.status_code} {error}",
        "the password grant is not refused",
    )


def _lockout(f: Findings, target: Target, person: str) -> None:
    secret = str(target.user(person)["totp_secret"])
    with Browser(target, own_address=True) as browser:
        browser.start()
        answer = browser.password(person)
        location = answer.headers.get("location", "")
        f.expect(
            answer.status_code == 303 and location.endswith("/mfa") and code_in(answer) is None,
            f"{person}: password alone → {answer.status_code} {location} (no code)",
            "a password alone goes further than the second factor",
        )
        wrong = []
        for attempt in range(SECOND_FACTOR_FREE_FAILURES):
            if attempt and attempt % (MAX_MFA_FAILURES - 1) == 0:  # a flow ends: a new one
                browser.start()
                browser.password(person)
            wrong.append(browser.second_factor(wrong_code(secret)).status_code)
        right = browser.second_factor(target.code_for(person))
    f.saw(f"{len(wrong)} wrong codes → {wrong} (from {browser.address or 'this host'})")
    f.expect(
        right.status_code == 429 and code_in(right) is None,
        f"then the right code → {right.status_code} (locked)",
        f"the right code after {len(wrong)} wrong ones was not refused ({right.status_code})",
    )


def _unlock_and_sign_in(f: Findings, target: Target, person: str) -> dict[str, Any]:
    """The operator lifts the lock the check caused (the person is needed again), then the
    person signs in with the second factor: the tokens a person gets."""
    user = target.user(person)
    tenant = tenant_id(target, str(user["tenant"]))
    if target.urls is None:
        f.saw(f"the database is not reachable: {person} stays locked until the lock expires")
        return target.tokens(admin_of(target, str(user["tenant"])))
    with target.owner() as db, db.transaction():
        as_tenant(db, tenant)
        locked = db.execute(
            "UPDATE users SET second_factor_failures = 0, second_factor_locked_until = NULL "
            "WHERE tenant_id = %s AND username = %s RETURNING 1",
            (tenant, person),
        ).fetchall()
    f.saw(f"the lock lifted by the operator (owner SQL, {len(locked)} row)")
    with Browser(target, own_address=True) as browser:
        answer = browser.sign_in(person, target.code_for(person))
        code = code_in(answer)
        if code is None:
            raise DrillError(f"{person} could not sign in after the unlock ({answer.status_code})")
        return browser.exchange(code)


def _token_lifetime(f: Findings, tokens: dict[str, Any]) -> None:
    _, claims = read_jwt(str(tokens["access_token"]))
    lifetime = int(claims["exp"]) - int(claims["iat"])
    f.expect(
        lifetime <= MAX_ACCESS_SECONDS and int(tokens.get("expires_in", 0)) <= MAX_ACCESS_SECONDS,
        f"access token exp - iat = {lifetime} s, expires_in {tokens.get('expires_in')}",
        f"access tokens live {lifetime} s",
    )
    amr = set(claims.get("amr", []))
    f.expect(
        bool(amr & SECOND_FACTORS),
        f"amr {sorted(amr)}, acr {claims.get('acr')}",
        "the token shows no second factor",
    )


@check("ID-2")
def tokens(target: Target) -> Outcome:
    f = Findings(
        "access tokens are ES256/EdDSA JWTs with iss, sub, aud, exp, iat, nbf, jti, tenant, "
        "their kid in the JWKS; the API refuses them re-signed with none, HS256 over the "
        "public key, a foreign kid, jku/x5u or an embedded jwk; a signing-key rotation keeps "
        "the previous key published and its tokens valid while new tokens carry the new kid; "
        "a refresh token used twice revokes its whole family, audited"
    )
    meta = discovery(target)
    tenant = target.tenants()[-1]
    person = spare_people(target, tenant)[-1]
    user = target.user(person)
    issued = target.tokens(person)
    access, refresh = str(issued["access_token"]), str(issued.get("refresh_token") or "")
    header, claims = read_jwt(access)
    published = _published_key(f, target, meta, header)
    f.expect(
        header.get("alg") in ASYMMETRIC,
        f"header alg {header.get('alg')}, typ {header.get('typ')}, kid {header.get('kid')}",
        f"tokens are signed {header.get('alg')}",
    )
    missing = [name for name in TOKEN_CLAIMS if name not in claims]
    f.expect(not missing, f"claims {sorted(claims)}", f"claims missing: {missing}")
    f.expect(
        claims.get("iss") == meta.get("issuer")
        and claims.get("tenant") == tenant_id(target, tenant),
        f"iss {claims.get('iss')}, aud {claims.get('aud')}, tenant {claims.get('tenant')}",
        "iss or tenant is not the instance's",
    )
    session = ApiSession(
        target, tenant, person, tuple(user.get("roles", ())), access, refresh, target.client()
    )
    try:
        route = readable_route(session, list_routes(target))
        f.saw(f"the genuine token: GET {route} → 200")
        for name, forged in forgeries(access, published, ATTACKER_URL).items():
            status = _status(session, route, forged)
            f.expect(status == 401, f"{name} → {status}", f"a token with {name} got {status}")
        _rotation(f, target, session, route, str(header.get("kid")))
        _refresh_reuse(f, target, session, route)
    finally:
        session.client.close()
    _stored_hashed(f, target, tenant, refresh)
    return f.outcome(
        f"{header.get('alg')} tokens with every claim; every forgery refused with 401; the "
        "signing key rotated live with the previous key still published and honoured; a reused "
        "refresh token revoked its family (the newer refresh and access tokens refused), audited"
    )


def _published_key(
    f: Findings, target: Target, meta: dict[str, Any], header: dict[str, Any]
) -> dict[str, Any]:
    with target.client() as http:
        keys = http.get(_path(str(meta.get("jwks_uri", "/oauth/jwks")))).json().get("keys", [])
    private = [k.get("kid") for k in keys if "d" in k]
    f.expect(
        not private, f"JWKS: {len(keys)} key(s), no private part", "the JWKS holds a private key"
    )
    match = [k for k in keys if k.get("kid") == header.get("kid")]
    f.expect(bool(match), f"the token's kid {header.get('kid')} is in the JWKS", "kid not in JWKS")
    if not match:
        raise DrillError("the token's signing key is not published")
    return dict(match[0])


def _rotation(f: Findings, target: Target, session: ApiSession, route: str, old_kid: str) -> None:
    """The operator rotates the token signing key (`ramparts keys rotate`, with the instance's
    settings): the JWKS then serves the new key and the previous one, a token signed before
    still verifies, and a token issued after (the session's refresh) carries the new kid."""
    if not target.environment:
        f.unproven("signing-key rotation (the drill is not this instance's operator)")
        return
    done = operator_command(target, "keys", "rotate", "--json")
    if not f.expect(
        done.returncode == 0,
        f"ramparts keys rotate → exit {done.returncode}",
        f"the operator's key rotation failed: {redacted_tail(done.stderr)}",
    ):
        return
    new_kid = str(json.loads(done.stdout).get("kid"))
    deadline = time.monotonic() + KEY_RING_SECONDS
    kids: list[str] = []
    with target.client() as http:
        while time.monotonic() < deadline:
            kids = [str(k.get("kid")) for k in http.get("/oauth/jwks").json().get("keys", [])]
            if new_kid in kids:
                break
            time.sleep(0.5)
    f.expect(
        new_kid in kids and old_kid in kids,
        f"after the rotation the JWKS serves {kids} (new {new_kid}, previous {old_kid})",
        f"the JWKS after the rotation serves {kids}, not the new {new_kid} and previous {old_kid}",
    )
    before = _status(session, route, session.access_token)
    f.expect(
        before == 200,
        f"a token signed before the rotation (kid {old_kid}) → {before}",
        f"a token signed before the rotation got {before}",
    )
    renewed = target.refreshed(session.refresh_token or "")
    if renewed is None:
        f.expect(False, "a token issued after the rotation", "the refresh was refused")
        return
    session.access_token = str(renewed["access_token"])
    session.refresh_token = renewed.get("refresh_token")
    header, _ = read_jwt(session.access_token)
    after = _status(session, route, session.access_token)
    f.expect(
        header.get("kid") == new_kid and after == 200,
        f"a token issued after the rotation: kid {header.get('kid')} → {after}",
        f"a token issued after the rotation carries kid {header.get('kid')}, got {after}",
    )


def _status(session: ApiSession, route: str, token: str) -> int:
    answer = session.client.get(route, headers={"Authorization": f"Bearer {token}"})
    return answer.status_code


def _refresh_reuse(f: Findings, target: Target, session: ApiSession, route: str) -> None:
    oidc = target.report.get("oidc_client") or {}
    started = now()

    def refresh(token: str) -> httpx.Response:
        return session.client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": token,
                "client_id": oidc.get("client_id", ""),
            },
        )

    first = refresh(session.refresh_token or "")
    if not f.expect(first.status_code == 200, f"refresh → {first.status_code}", "refresh refused"):
        return
    newer = first.json()
    f.expect(
        newer.get("refresh_token") not in {None, session.refresh_token},
        "a new refresh token with the new access token (rotation)",
        "the refresh token was not rotated",
    )
    # The newer access token works before the reuse, so its refusal after is the revocation's.
    before = _status(session, route, str(newer.get("access_token")))
    f.expect(
        before == 200,
        f"the newer access token before the reuse → {before}",
        f"the newer access token got {before} before any reuse",
    )
    again = refresh(session.refresh_token or "")
    f.expect(
        again.status_code == 400,
        f"the used refresh token again → {again.status_code} {again.json().get('error')}",
        "a used refresh token was accepted again",
    )
    family = refresh(str(newer.get("refresh_token")))
    f.expect(
        family.status_code == 400,
        f"the family's newer refresh token → {family.status_code}",
        "the family's newer refresh token still works after the reuse",
    )
    status = _status(session, route, str(newer.get("access_token")))
    f.expect(
        status == 401,
        f"the family's newer access token after the reuse → {status}",
        "its access token works after the reuse",
    )
    reused = audit_events(
        target.session(admin_of(target, session.tenant)),
        since=started,
        action=Action.REFRESH_TOKEN_REUSED.value,
    )
    if f.expect(bool(reused), f"{len(reused)} reuse event(s)", "the reuse is not audited"):
        f.evidence += cited(reused)


def _stored_hashed(f: Findings, target: Target, tenant: str, refresh: str) -> None:
    if target.urls is None:
        f.saw("the database is not reachable: how refresh tokens are stored is not seen")
        return
    digest = hashlib.sha256(refresh.encode()).digest()
    with target.owner() as db, rolled_back(db):
        as_tenant(db, tenant_id(target, tenant))
        rows = db.execute(
            "SELECT f.revoked_reason FROM refresh_tokens t JOIN refresh_families f "
            "ON f.tenant_id = t.tenant_id AND f.id = t.family_id WHERE t.token_hash = %s",
            (digest,),
        ).fetchall()
    f.expect(
        len(rows) == 1,
        f"the refresh token is stored as its SHA-256 ({len(rows)} row); its family revoked: "
        f"{rows[0][0] if rows else None}",
        "the refresh token is not found by its SHA-256",
    )


@check("ID-3")
def service_to_service(target: Target) -> Outcome:
    return service_clients.check(target)


@check("ID-4")
def secrets_kept(target: Target) -> Outcome:
    return secrets_check.check(target)
