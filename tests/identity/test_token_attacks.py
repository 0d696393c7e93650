"""The access-token verifier under attack: every forgery and misuse gets 401, and is logged."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwk, jwt

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.keys import load_key_ring
from tests.audit.trail import head, recorded
from tests.identity.helpers import OVERLAP, Account, bearer, obtain_tokens, provision


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64(json.dumps(value).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(payload))),
        signature,
    )


@pytest.fixture(scope="module")
def server_and_tokens(
    urls: DatabaseUrls, kms: Kms, serve_module_app: Callable[..., httpx.Client]
) -> tuple[httpx.Client, dict[str, Any], Account]:
    server = serve_module_app()
    account = provision(urls, kms)
    return server, obtain_tokens(server, account), account


@pytest.fixture(scope="module")
def server_key(urls: DatabaseUrls, kms: Kms) -> jwk.ECKey:
    """The server's real signing key, to show that only the claims make these tokens fail."""

    async def load() -> jwk.ECKey:
        database = Database(urls.owner, pool_size=1)
        try:
            async with database.session() as session:
                ring = await load_key_ring(session, overlap=OVERLAP)
            return ring.signing_key(kms)
        finally:
            await database.dispose()

    return asyncio.run(load())


ATTACKER = jwk.ECKey.generate_key("P-256", parameters={"kid": "attacker"}, private=True)


def resign(
    token: str,
    key: jwk.ECKey,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
) -> str:
    original_header, original_claims, _ = parts(token)
    new_header = {**original_header, **(header or {})}
    return jwt.encode(new_header, {**original_claims, **(claims or {})}, key, algorithms=["ES256"])


def sign_raw(header: dict[str, Any], claims: dict[str, Any], key: jwk.ECKey) -> str:
    """ES256 by hand, so headers a JOSE library would refuse to emit can be signed."""
    signing_input = f"{b64json(header)}.{b64json(claims)}".encode()
    der = key.get_op_key("sign").sign(signing_input, ec.ECDSA(hashes.SHA256()))
    r, s_ = decode_dss_signature(der)
    return f"{signing_input.decode()}.{b64(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"


def attacks(token: str, id_token: str, key: jwk.ECKey, public_pem: bytes) -> dict[str, str]:
    header, claims, signature = parts(token)
    now = int(time.time())
    unsigned = f"{b64json({**header, 'alg': 'none'})}.{b64json(claims)}."
    hs_input = f"{b64json({**header, 'alg': 'HS256'})}.{b64json(claims)}".encode()
    hs_signature = b64(hmac.new(public_pem, hs_input, hashlib.sha256).digest())
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    attacker_public = ATTACKER.as_dict(private=False)
    return {
        "alg-none": unsigned,
        "alg-none-uppercase": f"{b64json({**header, 'alg': 'NONE'})}.{b64json(claims)}.",
        "hs256-with-public-key": f"{hs_input.decode()}.{hs_signature}",
        "null-signature": f"{b64json(header)}.{b64json(claims)}.",
        "broken-signature": f"{b64json(header)}.{b64json(claims)}.{flipped}",
        "payload-swapped": f"{b64json(header)}.{b64json({**claims, 'roles': ['admin']})}."
        f"{signature}",
        # Signed with the server's real key: only the kid handling can refuse these.
        "unknown-kid": sign_raw({**header, "kid": "attacker"}, claims, key),
        "blank-kid": sign_raw({**header, "kid": ""}, claims, key),
        "path-traversal-kid": sign_raw({**header, "kid": "../../../etc/passwd"}, claims, key),
        "numeric-kid": sign_raw({**header, "kid": 1}, claims, key),
        "attacker-key-with-our-kid": sign_raw(header, claims, ATTACKER),
        "no-kid": jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, key),
        "jku-injected": resign(token, key, header={"jku": "https://evil.example/jwks"}),
        "x5u-injected": resign(token, key, header={"x5u": "https://evil.example/cert"}),
        "jwk-embedded": resign(token, ATTACKER, header={"jwk": attacker_public}),
        "crit-header": sign_raw({**header, "crit": ["exp"], "exp": now}, claims, key),
        "wrong-audience": resign(token, key, claims={"aud": "https://other.example/api"}),
        "wrong-issuer": resign(token, key, claims={"iss": "https://evil.example"}),
        "expired": resign(
            token, key, claims={"exp": now - 120, "iat": now - 900, "nbf": now - 900}
        ),
        "not-yet-valid": resign(token, key, claims={"nbf": now + 600, "iat": now + 600}),
        "missing-jti": jwt.encode(header, {k: v for k, v in claims.items() if k != "jti"}, key),
        "typ-jwt": resign(token, key, header={"typ": "JWT"}),
        "id-token-as-access-token": id_token,
        "garbage": "not.a.jwt",
        "empty-parts": "..",
    }


ATTACK_NAMES = list(
    attacks(
        jwt.encode({"alg": "ES256", "kid": "k", "typ": "at+jwt"}, {"sub": "x"}, ATTACKER),
        "a.b.c",
        ATTACKER,
        b"pem",
    ).keys()
)


@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_forged_or_misused_tokens_are_refused_and_audited(
    server_and_tokens: tuple[httpx.Client, dict[str, Any], Account],
    server_key: jwk.ECKey,
    urls: DatabaseUrls,
    attack: str,
) -> None:
    server, tokens, _ = server_and_tokens
    public_key = server_key.get_op_key("verify")
    pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    forged = attacks(tokens["access_token"], tokens["id_token"], server_key, pem)[attack]
    before = head(urls)
    response = server.get("/oauth/userinfo", headers=bearer(forged))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # Recorded on the system chain: nothing in a forged token, its tenant least of all, is
    # believed. The token itself is never written down.
    [event] = recorded(urls, None, Action.TOKEN_REJECTED, after=before)
    assert event["decision"] == "deny"
    assert event["details"]["path"] == "/oauth/userinfo"
    assert event["details"]["reason"]
    assert forged not in json.dumps(event)


def test_the_genuine_token_is_accepted(
    server_and_tokens: tuple[httpx.Client, dict[str, Any], Account],
) -> None:
    server, tokens, account = server_and_tokens
    response = server.get("/oauth/userinfo", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json()["sub"] == str(account.user_id)


@pytest.mark.parametrize("header", ["", "Bearer", "bearer", "Basic dXNlcjpwYXNz", "Token x"])
def test_missing_or_wrong_scheme(
    server_and_tokens: tuple[httpx.Client, dict[str, Any], Account], header: str
) -> None:
    server, _, _ = server_and_tokens
    response = server.get("/oauth/userinfo", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
