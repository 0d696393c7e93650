"""OAuth 2.0 / OIDC grants: authorization code with PKCE (RFC 6749 4.1, RFC 7636 S256 only)
and refresh-token rotation with reuse detection (RFC 9700 section 4.14).

Codes and refresh tokens are opaque: `<tenant hex>.<256 random bits>`. The prefix only routes
the lookup to the right tenant session; the database holds SHA-256 hashes, never the tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.digest import token_digest
from ramparts.db.engine import Database
from ramparts.identity.keys import KeyRing, load_key_ring
from ramparts.identity.tokens import IdTokenHint, TokenIssuer

__all__ = [
    "Client",
    "CodeReusedError",
    "KeyCache",
    "OAuthError",
    "OAuthService",
    "TokenResponse",
    "single_valued",
]

CODE_LIFETIME = timedelta(seconds=60)
ACR_MFA = "urn:ramparts:acr:mfa"
#: Phishing-resistant: the second factor was a WebAuthn key bound to our origin.
ACR_PHISHING_RESISTANT = "urn:ramparts:acr:phr"


def acr_for(amr: list[str]) -> str:
    return ACR_PHISHING_RESISTANT if "hwk" in amr else ACR_MFA


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: `error` is the spec's code, `description` for humans."""

    def __init__(self, error: str, description: str, *, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def single_valued(*sources: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """A request's OAuth parameters, from its query and/or form body taken together.

    RFC 6749 sections 3.1 and 3.2: a parameter must not be included more than once (parsers
    disagree on which copy wins, so `code=a&code=b` is refused, as is the same name in the query
    and the body), and one sent without a value is treated as omitted.
    """
    seen: dict[str, str] = {}
    for source in sources:
        for name, value in source:
            if name in seen:
                raise OAuthError("invalid_request", f"parameter {name[:64]!r} is repeated")
            if not isinstance(value, str):
                raise OAuthError("invalid_request", f"parameter {name[:64]!r} must be text")
            seen[name] = value
    return {name: value for name, value in seen.items() if value}


class CodeReusedError(OAuthError):
    """An authorization code presented a second time; what it issued is already revoked."""

    def __init__(self) -> None:
        super().__init__("invalid_grant", "authorization code already used; its tokens are revoked")


@dataclass(frozen=True)
class Client:
    client_id: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    is_public: bool


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    refresh_token: str
    id_token: str | None
    expires_in: int
    scope: str

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }
        if self.id_token:
            body["id_token"] = self.id_token
        return body


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _opaque(tenant: uuid.UUID) -> str:
    return f"{tenant.hex}.{secrets.token_urlsafe(32)}"


def _code_refusal(
    code: Row[Any], client_id: str, redirect_uri: str, code_verifier: str
) -> str | None:
    """Why this request may not redeem this (just consumed) code, or None."""
    if not secrets.compare_digest(code.client_id, client_id):
        return "code was issued to another client"
    if code.redirect_uri != redirect_uri:
        return "redirect_uri does not match the request"
    if code.expires_at < datetime.now(UTC):
        return "authorization code expired"
    if not secrets.compare_digest(s256(code_verifier), code.code_challenge):
        return "PKCE verification failed"
    return None


def code_family(code_hash: bytes) -> uuid.UUID:
    """The refresh family an authorization code starts, derived from the code's stored hash,
    so a replayed code finds what it issued without another column to keep in step."""
    digest = hashlib.sha256(b"ramparts code family\x00" + code_hash).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def _hint_params(hint: IdTokenHint) -> dict[str, Any]:
    return {
        "tenant": hint.tenant,
        "family": hint.session,
        "user": hint.user,
        "client": hint.client_id,
    }


def _tenant_of(token: str) -> uuid.UUID | None:
    prefix, dot, rest = token.partition(".")
    if not dot or len(rest) < 43:
        return None
    try:
        return uuid.UUID(hex=prefix)
    except ValueError:
        return None


class KeyCache:
    """The key ring, reloaded every `max_age`, and on demand (for a kid we do not know yet)
    at most once per `min_forced_interval`, so forged kids cannot hammer the database."""

    def __init__(
        self,
        database: Database,
        *,
        overlap: timedelta,
        max_age: float = 15.0,
        min_forced_interval: float = 1.0,
    ) -> None:
        self._db = database
        self._overlap = overlap
        self._max_age = max_age
        self._min_forced_interval = min_forced_interval
        self._ring: KeyRing | None = None
        self._loaded = 0.0
        self._forced = 0.0
        self._lock = asyncio.Lock()

    async def ring(self, *, refresh: bool = False) -> KeyRing:
        now = time.monotonic()
        forced = refresh and now - self._forced > self._min_forced_interval
        if self._ring is None or forced or now - self._loaded > self._max_age:
            async with self._lock:
                async with self._db.session() as session:
                    self._ring = await load_key_ring(session, overlap=self._overlap)
                self._loaded = time.monotonic()
                if forced:
                    self._forced = self._loaded
        return self._ring


class OAuthService:
    def __init__(
        self,
        database: Database,
        issuer: TokenIssuer,
        keys: KeyCache,
        audit: AuditLog,
        *,
        family_lifetime: timedelta,
    ) -> None:
        self._db = database
        self._issuer = issuer
        self._keys = keys
        self._audit = audit
        self._family_lifetime = family_lifetime

    @property
    def family_lifetime(self) -> timedelta:
        """How long a sign-in (a refresh family) lasts at most."""
        return self._family_lifetime

    async def client(self, client_id: str) -> Client | None:
        async with self._db.session() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT client_id, redirect_uris, post_logout_redirect_uris, is_public "
                        "FROM oauth_clients WHERE client_id = :id"
                    ),
                    {"id": client_id},
                )
            ).first()
        if row is None:
            return None
        return Client(row[0], tuple(row[1]), tuple(row[2]), row[3])

    async def create_code(
        self,
        *,
        tenant: uuid.UUID,
        user: uuid.UUID,
        client_id: str,
        redirect_uri: str,
        code_challenge: str,
        nonce: str | None,
        scope: str,
        amr: list[str],
        auth_time: datetime,
    ) -> str:
        code = _opaque(tenant)
        async with self._db.tenant_session(tenant) as session:
            await session.execute(
                text(
                    "INSERT INTO authorization_codes (tenant_id, code_hash, client_id, user_id,"
                    " redirect_uri, code_challenge, nonce, scope, amr, auth_time, expires_at) "
                    "VALUES (:tenant, :hash, :client, :user, :redirect, :challenge, :nonce, "
                    ":scope, :amr, :auth_time, :expires)"
                ),
                {
                    "tenant": tenant,
                    "hash": token_digest(code),
                    "client": client_id,
                    "user": user,
                    "redirect": redirect_uri,
                    "challenge": code_challenge,
                    "nonce": nonce,
                    "scope": scope,
                    "amr": amr,
                    "auth_time": auth_time,
                    "expires": datetime.now(UTC) + CODE_LIFETIME,
                },
            )
            await self._audit.record(
                session,
                Actor("user", tenant=tenant, id=str(user), auth=amr, client_id=client_id),
                Action.LOGIN_SUCCEEDED,
                Resource("oauth_client", client_id),
                Decision.ALLOW,
                {"acr": acr_for(amr)},
            )
        return code

    async def exchange_code(
        self, *, code: str, client_id: str, redirect_uri: str, code_verifier: str
    ) -> TokenResponse:
        tenant = _tenant_of(code)
        if tenant is None:
            raise OAuthError("invalid_grant", "unknown authorization code")
        code_hash = token_digest(code)
        refusal: str | None = None
        tokens: TokenResponse | None = None
        replayed = False
        # One transaction consumes the code and issues its tokens, so a concurrent replay
        # waits on the code's row and then finds the tokens committed, ready to revoke.
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "UPDATE authorization_codes SET consumed_at = now() "
                        "WHERE tenant_id = :tenant AND code_hash = :hash AND consumed_at IS NULL "
                        "RETURNING client_id, user_id, redirect_uri, code_challenge, nonce, scope, "
                        "amr, auth_time, expires_at"
                    ),
                    {"tenant": tenant, "hash": code_hash},
                )
            ).first()
            if row is None:
                replayed = await self._revoke_replayed_code(session, tenant, code_hash, client_id)
            else:
                refusal = _code_refusal(row, client_id, redirect_uri, code_verifier)
                if refusal is None:
                    # A savepoint: when issuing fails (the user was disabled), the code stays
                    # burnt, because a code is spent by its first attempt (RFC 6749 4.1.2).
                    try:
                        async with session.begin_nested():
                            tokens = await self._code_tokens(session, tenant, code_hash, row)
                    except OAuthError as exc:
                        refusal = exc.description
        if row is None:
            if replayed:  # committed above: the code's tokens are revoked before we answer
                raise CodeReusedError()
            # The tenant in an unknown code is only a claim: the refusal goes to the system chain.
            raise await self._refused(
                None,
                client_id,
                OAuthError("invalid_grant", "unknown, expired or already used code"),
            )
        if tokens is None:
            raise await self._refused(
                tenant, client_id, OAuthError("invalid_grant", refusal or "code refused")
            )
        return tokens

    async def _code_tokens(
        self, session: AsyncSession, tenant: uuid.UUID, code_hash: bytes, code: Row[Any]
    ) -> TokenResponse:
        """The first tokens of a sign-in, in a new refresh family named after the code."""
        family = code_family(code_hash)
        await session.execute(
            text(
                "INSERT INTO refresh_families (tenant_id, id, client_id, user_id, scope, "
                "amr, auth_time, expires_at) VALUES (:tenant, :id, :client, :user, :scope,"
                " :amr, :auth_time, :expires)"
            ),
            {
                "tenant": tenant,
                "id": family,
                "client": code.client_id,
                "user": code.user_id,
                "scope": code.scope,
                "amr": code.amr,
                "auth_time": code.auth_time,
                "expires": datetime.now(UTC) + self._family_lifetime,
            },
        )
        return await self._tokens(
            session,
            tenant=tenant,
            user=code.user_id,
            family=family,
            client_id=code.client_id,
            scope=code.scope,
            amr=list(code.amr),
            auth_time=code.auth_time,
            nonce=code.nonce,
            with_id_token=True,
        )

    async def revoke_reused_code(self, values: Iterable[str | None], client_id: str) -> bool:
        """Whether any of `values` (a refused token request's `code`, `refresh_token`...) is an
        authorization code redeemed before; if so its tokens are revoked, committed before the
        caller answers. A second use of a code is a leak whatever else is wrong with the
        request: another client, no verifier, another grant type (RFC 6749 4.1.2)."""
        reused = False
        for value in {v for v in values if v}:
            tenant = _tenant_of(value)
            if tenant is None:
                continue
            async with self._db.tenant_session(tenant) as session:
                reused |= await self._revoke_replayed_code(
                    session, tenant, token_digest(value), client_id
                )
        return reused

    async def _revoke_replayed_code(
        self, session: AsyncSession, tenant: uuid.UUID, code_hash: bytes, client_id: str
    ) -> bool:
        """A code presented again: it leaked, so everything issued from it is revoked, the
        refresh family and with it every access token (RFC 6749 4.1.2, RFC 9700 4.5).
        FOR UPDATE waits for a redemption still in progress, so its tokens are committed and
        found here."""
        row = (
            await session.execute(
                text(
                    "SELECT user_id, client_id FROM authorization_codes WHERE tenant_id = :tenant "
                    "AND code_hash = :hash AND consumed_at IS NOT NULL FOR UPDATE"
                ),
                {"tenant": tenant, "hash": code_hash},
            )
        ).first()
        if row is None:
            return False
        family = code_family(code_hash)
        revoked = await self._revoke_family(session, tenant, family, "authorization code reused")
        await self._audit.record(
            session,
            Actor("anonymous", tenant=tenant, client_id=client_id),
            Action.AUTHORIZATION_CODE_REUSED,
            Resource("refresh_family", str(family)),
            Decision.DENY,
            {"user": str(row[0]), "code_client": row[1], "family_revoked": revoked},
        )
        return True

    async def refresh(self, *, refresh_token: str, client_id: str) -> TokenResponse:
        tenant = _tenant_of(refresh_token)
        if tenant is None:
            raise OAuthError("invalid_grant", "unknown refresh token")
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT t.family_id, t.consumed_at, f.client_id, f.user_id, f.scope, f.amr,"
                        " f.auth_time, f.expires_at, f.revoked_at FROM refresh_tokens t "
                        "JOIN refresh_families f ON f.tenant_id = t.tenant_id "
                        "AND f.id = t.family_id WHERE t.tenant_id = :tenant "
                        "AND t.token_hash = :hash FOR UPDATE OF t, f"
                    ),
                    {"tenant": tenant, "hash": token_digest(refresh_token)},
                )
            ).first()
            if row is None:
                raise await self._refused(
                    None, client_id, OAuthError("invalid_grant", "unknown refresh token")
                )
            family, consumed, family_client, user, scope, amr, auth_time, expires, revoked = row
            if consumed is not None:  # checked first: a used token is a leak, whoever sends it
                await self._revoke_family(session, tenant, family, "refresh token reused")
                await self._audit.record(
                    session,
                    Actor("anonymous", tenant=tenant, client_id=client_id),
                    Action.REFRESH_TOKEN_REUSED,
                    Resource("refresh_family", str(family)),
                    Decision.DENY,
                    {"user": str(user), "family_revoked": True},
                )
            elif not secrets.compare_digest(family_client, client_id):
                raise await self._refused(
                    tenant,
                    client_id,
                    OAuthError("invalid_grant", "refresh token was issued to another client"),
                )
            elif revoked is not None or expires < datetime.now(UTC):
                raise await self._refused(
                    tenant,
                    client_id,
                    OAuthError("invalid_grant", "refresh token expired or revoked"),
                )
            else:
                await session.execute(
                    text(
                        "UPDATE refresh_tokens SET consumed_at = now() "
                        "WHERE tenant_id = :tenant AND token_hash = :hash"
                    ),
                    {"tenant": tenant, "hash": token_digest(refresh_token)},
                )
                return await self._tokens(
                    session,
                    tenant=tenant,
                    user=user,
                    family=family,
                    client_id=client_id,
                    scope=scope,
                    amr=list(amr),
                    auth_time=auth_time,
                    nonce=None,
                    with_id_token=False,
                )
        # Outside the transaction, so the revocation above is committed before we answer.
        raise OAuthError("invalid_grant", "refresh token already used; the session is revoked")

    async def revoke(self, *, token: str, client_id: str) -> None:
        """RFC 7009: end the refresh family the token belongs to (unknown tokens: no-op)."""
        tenant = _tenant_of(token)
        if tenant is None:
            return
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT f.id, f.client_id FROM refresh_tokens t JOIN refresh_families f "
                        "ON f.tenant_id = t.tenant_id AND f.id = t.family_id "
                        "WHERE t.tenant_id = :tenant AND t.token_hash = :hash"
                    ),
                    {"tenant": tenant, "hash": token_digest(token)},
                )
            ).first()
            if row is not None and secrets.compare_digest(row[1], client_id):
                await self._revoke_family(session, tenant, row[0], "revoked by client")
                await self._audit.record(
                    session,
                    Actor("anonymous", tenant=tenant, client_id=client_id),
                    Action.SESSION_ENDED,
                    Resource("refresh_family", str(row[0])),
                    Decision.ALLOW,
                    {"reason": "revoked by client"},
                )

    async def revoke_access_token(self, *, tenant: uuid.UUID, jti: uuid.UUID) -> None:
        async with self._db.tenant_session(tenant) as session:
            await session.execute(
                text(
                    "UPDATE access_tokens SET revoked_at = now() WHERE tenant_id = :tenant "
                    "AND jti = :jti AND revoked_at IS NULL"
                ),
                {"tenant": tenant, "jti": jti},
            )

    async def session_live(self, hint: IdTokenHint) -> bool:
        """Whether the sign-in a logout hint names is still on: its refresh family, of that
        user at that client, neither revoked nor expired."""
        async with self._db.tenant_session(hint.tenant) as session:
            live = await session.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM refresh_families WHERE tenant_id = :tenant "
                    "AND id = :family AND user_id = :user AND client_id = :client "
                    "AND revoked_at IS NULL AND expires_at > now())"
                ),
                _hint_params(hint),
            )
        return bool(live)

    async def end_session(self, hint: IdTokenHint) -> bool:
        """Logout: end the one sign-in the hint was issued for (its refresh family and access
        tokens), never the user's other sessions. False when it had already ended."""
        async with self._db.tenant_session(hint.tenant) as session:
            family = await session.scalar(
                text(
                    "SELECT id FROM refresh_families WHERE tenant_id = :tenant AND id = :family "
                    "AND user_id = :user AND client_id = :client FOR UPDATE"
                ),
                _hint_params(hint),
            )
            ended = family is not None and await self._revoke_family(
                session, hint.tenant, hint.session, "logout"
            )
            await self._audit.record(
                session,
                Actor("user", tenant=hint.tenant, id=str(hint.user), client_id=hint.client_id),
                Action.SESSION_ENDED,
                Resource("refresh_family", str(hint.session)),
                Decision.ALLOW if ended else Decision.DENY,
                {"reason": "logout", "ended": ended},
            )
        return ended

    async def _refused(
        self, tenant: uuid.UUID | None, client_id: str, error: OAuthError
    ) -> OAuthError:
        """Record a refused grant (the request's transaction may roll back) and return it."""
        await self._audit.record_apart(
            tenant,
            Actor("anonymous", tenant=tenant, client_id=client_id),
            Action.TOKEN_REFUSED,
            Resource("oauth_client", client_id),
            Decision.DENY,
            {"error": error.error, "reason": error.description},
        )
        return error

    async def _revoke_family(
        self, session: AsyncSession, tenant: uuid.UUID, family: uuid.UUID, reason: str
    ) -> bool:
        """Revoke a refresh family and its access tokens; False when it was not live."""
        params = {"tenant": tenant, "family": family}
        revoked = await session.execute(
            text(
                "UPDATE refresh_families SET revoked_at = now(), revoked_reason = :reason "
                "WHERE tenant_id = :tenant AND id = :family AND revoked_at IS NULL"
            ),
            {**params, "reason": reason},
        )
        await session.execute(
            text(
                "UPDATE access_tokens SET revoked_at = now() WHERE tenant_id = :tenant "
                "AND family_id = :family AND revoked_at IS NULL"
            ),
            params,
        )
        return bool(getattr(revoked, "rowcount", 0))

    async def _tokens(
        self,
        session: AsyncSession,
        *,
        tenant: uuid.UUID,
        user: uuid.UUID,
        family: uuid.UUID,
        client_id: str,
        scope: str,
        amr: list[str],
        auth_time: datetime,
        nonce: str | None,
        with_id_token: bool,
    ) -> TokenResponse:
        user_row = (
            await session.execute(
                text(
                    "SELECT u.username, u.is_active, coalesce(array_agg(m.role ORDER BY m.role) "
                    "FILTER (WHERE m.role IS NOT NULL), '{}') FROM users u LEFT JOIN memberships m "
                    "ON m.tenant_id = u.tenant_id AND m.user_id = u.id "
                    "WHERE u.tenant_id = :tenant AND u.id = :user GROUP BY u.id"
                ),
                {"tenant": tenant, "user": user},
            )
        ).first()
        if user_row is None or not user_row[1]:
            raise OAuthError("invalid_grant", "the user no longer exists or is disabled")
        username, _, roles = user_row
        ring = await self._keys.ring()
        access, jti, expires = self._issuer.access_token(
            ring,
            subject=user,
            tenant=tenant,
            roles=list(roles),
            amr=amr,
            acr=acr_for(amr),
            client_id=client_id,
            scope=scope,
            auth_time=auth_time,
        )
        refresh = _opaque(tenant)
        await session.execute(
            text(
                "INSERT INTO access_tokens (tenant_id, jti, family_id, expires_at) "
                "VALUES (:tenant, :jti, :family, :expires)"
            ),
            {"tenant": tenant, "jti": jti, "family": family, "expires": expires},
        )
        await session.execute(
            text(
                "INSERT INTO refresh_tokens (tenant_id, token_hash, family_id) "
                "VALUES (:tenant, :hash, :family)"
            ),
            {"tenant": tenant, "hash": token_digest(refresh), "family": family},
        )
        id_token = None
        if with_id_token and "openid" in scope.split():
            id_token = self._issuer.id_token(
                ring,
                subject=user,
                tenant=tenant,
                client_id=client_id,
                nonce=nonce,
                amr=amr,
                acr=acr_for(amr),
                auth_time=auth_time,
                username=username,
                session=family,
            )
        await self._audit.record(
            session,
            Actor("user", tenant=tenant, id=str(user), roles=roles, auth=amr, client_id=client_id),
            Action.TOKEN_ISSUED,
            Resource("access_token", str(jti)),
            Decision.ALLOW,
            {"family": str(family), "scope": scope, "expires_at": expires.isoformat()},
        )
        return TokenResponse(access, refresh, id_token, self._issuer.access_seconds, scope)

    async def access_token_revoked(
        self,
        tenant: uuid.UUID,
        jti: uuid.UUID,
        *,
        service_client: str | None = None,
        session: AsyncSession | None = None,
    ) -> bool:
        """Whether a verified access token may no longer be used: revoked itself (or with its
        refresh family), unknown, or issued to a service client that has since been revoked.
        One query on primary keys; it runs on every authenticated request, in `session` (a
        tenant session of `tenant`: the request's own transaction) or else in its own."""
        if session is None:
            async with self._db.tenant_session(tenant) as own:
                return await _token_revoked(own, tenant, jti, service_client)
        return await _token_revoked(session, tenant, jti, service_client)


TOKEN_REVOKED = text(
    "SELECT a.revoked_at IS NOT NULL OR (CAST(:client AS text) IS NOT NULL AND "
    "NOT EXISTS (SELECT 1 FROM service_clients c WHERE c.tenant_id = a.tenant_id "
    "AND c.client_id = :client AND c.revoked_at IS NULL)) "
    "FROM access_tokens a WHERE a.tenant_id = :tenant AND a.jti = :jti"
)


async def _token_revoked(
    session: AsyncSession, tenant: uuid.UUID, jti: uuid.UUID, service_client: str | None
) -> bool:
    revoked = await session.scalar(
        TOKEN_REVOKED, {"tenant": tenant, "jti": jti, "client": service_client}
    )
    return revoked is None or bool(revoked)
