"""Access and ID tokens (RFC 9068 JWT access tokens, OIDC ID tokens), signed ES256.

The verifier is strict by construction: it reads the header itself before any signature work
and accepts exactly one algorithm, one token type, our issuer and our audience, and only keys
from our own key ring, never a key or key URL named by the token.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from ramparts.crypto.digest import token_digest
from ramparts.crypto.kms import Kms
from ramparts.identity.keys import ALGORITHM, KeyRing

__all__ = [
    "ACR_SERVICE",
    "AccessClaims",
    "IdTokenHint",
    "TokenError",
    "TokenIssuer",
    "TokenVerifier",
]

ACR_SERVICE = "urn:ramparts:acr:service"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
#: Headers that let a token choose its own verification key or extend the rules: never honoured.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
LEEWAY_SECONDS = 30


class TokenError(Exception):
    """The token is not acceptable; the message says why (for logs, not for clients)."""


@dataclass(frozen=True)
class AccessClaims:
    subject: str  # a user's id, or a service client's client_id
    tenant: uuid.UUID
    roles: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str
    jti: uuid.UUID
    client_id: str
    scope: str
    expires_at: datetime
    certificate_thumbprint: str | None = None  # RFC 8705 cnf.x5t#S256, for mTLS-bound tokens
    auth_time: datetime | None = None  # when the person signed in (absent for services)

    @property
    def is_service(self) -> bool:
        return self.acr == ACR_SERVICE


@dataclass(frozen=True)
class IdTokenHint:
    """What a verified `id_token_hint` names: one sign-in of one user at one client."""

    tenant: uuid.UUID
    user: uuid.UUID
    client_id: str
    session: uuid.UUID  # the refresh family (`sid`)


class TokenIssuer:
    def __init__(self, *, issuer: str, audience: str, access_seconds: int, kms: Kms) -> None:
        self.issuer = issuer
        self.audience = audience
        self.access_seconds = access_seconds
        self._kms = kms

    def _sign(self, ring: KeyRing, header: dict[str, Any], claims: dict[str, Any]) -> str:
        key = ring.signing_key(self._kms)
        return jwt.encode(
            {**header, "alg": ALGORITHM, "kid": key.kid}, claims, key, algorithms=[ALGORITHM]
        )

    def access_token(
        self,
        ring: KeyRing,
        *,
        subject: uuid.UUID,
        tenant: uuid.UUID,
        roles: list[str],
        amr: list[str],
        acr: str,
        client_id: str,
        scope: str,
        auth_time: datetime,
    ) -> tuple[str, uuid.UUID, datetime]:
        now = int(time.time())
        jti = uuid.uuid4()
        expires = now + self.access_seconds
        claims = {
            "auth_time": int(auth_time.timestamp()),
            "iss": self.issuer,
            "sub": str(subject),
            "aud": self.audience,
            "exp": expires,
            "iat": now,
            "nbf": now,
            "jti": str(jti),
            "tenant": str(tenant),
            "roles": roles,
            "amr": amr,
            "acr": acr,
            "client_id": client_id,
            "scope": scope,
        }
        token = self._sign(ring, {"typ": ACCESS_TOKEN_TYPE}, claims)
        return token, jti, datetime.fromtimestamp(expires, UTC)

    def service_token(
        self,
        ring: KeyRing,
        *,
        client_id: str,
        tenant: uuid.UUID,
        roles: list[str],
        audience: str,
        certificate_thumbprint: str | None,
    ) -> tuple[str, uuid.UUID, datetime]:
        """A client_credentials token: for one audience (RFC 8707) and, with mTLS, bound to
        the client's certificate (RFC 8705 section 3)."""
        now = int(time.time())
        jti = uuid.uuid4()
        expires = now + self.access_seconds
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": audience,
            "exp": expires,
            "iat": now,
            "nbf": now,
            "jti": str(jti),
            "tenant": str(tenant),
            "roles": roles,
            "amr": [],
            "acr": ACR_SERVICE,
            "client_id": client_id,
            "scope": "",
        }
        if certificate_thumbprint:
            claims["cnf"] = {"x5t#S256": certificate_thumbprint}
        token = self._sign(ring, {"typ": ACCESS_TOKEN_TYPE}, claims)
        return token, jti, datetime.fromtimestamp(expires, UTC)

    def id_token(
        self,
        ring: KeyRing,
        *,
        subject: uuid.UUID,
        tenant: uuid.UUID,
        client_id: str,
        nonce: str | None,
        amr: list[str],
        acr: str,
        auth_time: datetime,
        username: str,
        session: uuid.UUID,
    ) -> str:
        """`sid` names the sign-in (the refresh family) the token was issued for, as OIDC
        Front- and Back-Channel Logout define it: a logout hint ends that sign-in only."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": str(subject),
            "sid": str(session),
            "aud": client_id,
            "azp": client_id,
            "exp": now + self.access_seconds,
            "iat": now,
            "auth_time": int(auth_time.timestamp()),
            "amr": amr,
            "acr": acr,
            "tenant": str(tenant),
            "preferred_username": username,
        }
        if nonce:
            claims["nonce"] = nonce
        return self._sign(ring, {"typ": "JWT"}, claims)


class TokenVerifier:
    """Verifies access tokens presented to the API (pinned issuer, audience, algorithm).

    A client presents the same access token on every request of its short life, so tokens
    that verified are remembered (by SHA-256 of their exact bytes, at most `cache_size`) and
    skip the signature check until they expire or their key leaves the ring. Revocation is
    not cached: the caller checks it on every request.
    """

    def __init__(self, *, issuer: str, audience: str, cache_size: int = 10_000) -> None:
        self._cache: OrderedDict[bytes, tuple[AccessClaims, str]] = OrderedDict()
        self._cache_size = cache_size
        self._issuer = issuer
        self._registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            nbf={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )

    def _decode(self, token: str, ring: KeyRing, typ: str) -> tuple[dict[str, Any], str]:
        """Header checks first, then the signature with one of our own keys."""
        try:
            compact = jws.extract_compact(token.encode("ascii"))
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenError(f"malformed token: {exc}") from None
        header = compact.protected
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"algorithm {header.get('alg')!r} is not accepted")
        forbidden = FORBIDDEN_HEADERS & header.keys()
        if forbidden:
            raise TokenError(f"header {sorted(forbidden)[0]!r} is not accepted")
        if header.get("typ") != typ:
            raise TokenError(f"wrong token type (typ must be {typ})")
        kid = header.get("kid")
        key = ring.verification_key(kid) if isinstance(kid, str) else None
        if key is None or not isinstance(kid, str):
            raise TokenError("unknown or retired signing key")
        # The token was parsed once above; verify that same object (no second parse).
        try:
            valid = jws.validate_compact(compact, key, algorithms=[ALGORITHM])
        except JoseError as exc:
            raise TokenError(f"rejected: {exc}") from None
        if not valid:
            raise TokenError("bad signature")
        try:
            claims = json.loads(compact.payload)
        except ValueError:
            raise TokenError("malformed claims") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed claims")
        return claims, kid

    def verify_id_token_hint(self, token: str, ring: KeyRing, *, max_age: timedelta) -> IdTokenHint:
        """An ID token we issued, as a logout hint (OIDC RP-Initiated Logout 1.0 section 2):
        signature and issuer must hold; expiry may have passed, but not `max_age` since it was
        issued (a sign-in outlives no longer), and it must name its sign-in (`sid`)."""
        claims, _ = self._decode(token, ring, "JWT")
        if claims.get("iss") != self._issuer or not isinstance(claims.get("aud"), str):
            raise TokenError("not one of our ID tokens")
        try:
            issued = int(claims["iat"])
            hint = IdTokenHint(
                tenant=uuid.UUID(claims["tenant"]),
                user=uuid.UUID(claims["sub"]),
                client_id=str(claims["aud"]),
                session=uuid.UUID(claims["sid"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise TokenError(f"malformed hint: {exc}") from None
        now = time.time()
        if issued > now + LEEWAY_SECONDS or issued + max_age.total_seconds() < now:
            raise TokenError("hint issued too long ago (or in the future)")
        return hint

    def verify(self, token: str, ring: KeyRing) -> AccessClaims:
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None:
            claims, kid = cached
            fresh = claims.expires_at.timestamp() + LEEWAY_SECONDS > time.time()
            if fresh and ring.verification_key(kid) is not None:
                self._cache.move_to_end(digest)
                return claims
            del self._cache[digest]
        verified = self._verify(token, ring)
        self._cache[digest] = verified
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return verified[0]

    def _verify(self, token: str, ring: KeyRing) -> tuple[AccessClaims, str]:
        claims, kid = self._decode(token, ring, ACCESS_TOKEN_TYPE)
        try:
            self._registry.validate(claims)
            return AccessClaims(
                subject=_subject(claims),
                tenant=uuid.UUID(claims["tenant"]),
                roles=tuple(_strings(claims["roles"])),
                amr=tuple(_strings(claims["amr"])),
                acr=str(claims["acr"]),
                jti=uuid.UUID(claims["jti"]),
                client_id=str(claims["client_id"]),
                scope=str(claims["scope"]),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
                certificate_thumbprint=_thumbprint(claims),
                auth_time=(
                    datetime.fromtimestamp(int(claims["auth_time"]), UTC)
                    if "auth_time" in claims
                    else None
                ),
            ), kid
        except JoseError as exc:
            raise TokenError(f"rejected: {exc}") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise TokenError(f"malformed claims: {exc}") from None


def _subject(claims: dict[str, Any]) -> str:
    """Users are UUIDs; service clients are their client_id (checked against client_id)."""
    subject = claims["sub"]
    if claims.get("acr") == ACR_SERVICE:
        if subject != claims["client_id"]:
            raise ValueError("a service token's subject must be its client")
        return str(subject)
    return str(uuid.UUID(subject))


def _thumbprint(claims: dict[str, Any]) -> str | None:
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    if not isinstance(cnf, dict) or not isinstance(cnf.get("x5t#S256"), str):
        raise TypeError("malformed cnf claim")
    return str(cnf["x5t#S256"])


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return value


def overlap_for(access_seconds: int) -> timedelta:
    """Keys stay published for one access-token lifetime plus the leeway after rotation."""
    return timedelta(seconds=access_seconds + LEEWAY_SECONDS)
