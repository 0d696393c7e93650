"""HTTP for identity: OIDC discovery, JWKS, authorize, login + MFA pages, token, userinfo,
revocation and end-session. Protocol errors follow the RFCs (JSON `error` bodies at the token
endpoint, `error` redirects from authorize); everything else is problem+json.

No `from __future__ import annotations` here: FastAPI must evaluate the route signatures,
which refer to dependencies that exist only inside `build_router`.
"""

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import pyotp
import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.templating import Jinja2Templates

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.headers import FORM_ACTION_HEADER
from ramparts.identity.auth import BearerAuthenticator, Principal, actor_of
from ramparts.identity.clients import ASSERTION_TYPE, ServiceClients
from ramparts.identity.federation import FederatedLogin, Federation, FederationError
from ramparts.identity.flow import FLOW_SECONDS, FlowCodec, FlowConflict, FlowStore, LoginFlow
from ramparts.identity.lockout import SecondFactorLockedError
from ramparts.identity.login import Authenticator
from ramparts.identity.mtls import client_certificate_thumbprint
from ramparts.identity.oauth import (
    CodeReusedError,
    KeyCache,
    OAuthError,
    OAuthService,
    TokenResponse,
    single_valued,
)
from ramparts.identity.passkeys import PasskeyError, Passkeys
from ramparts.identity.tokens import IdTokenHint, TokenError, TokenVerifier
from ramparts.problems import Problem
from ramparts.routes import Exempt, declares

__all__ = ["IdentityHttp", "build_router"]

log = structlog.get_logger(__name__)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
SCOPES = frozenset({"openid", "profile"})
PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
PKCE_VERIFIER = PKCE_CHALLENGE
MAX_MFA_FAILURES = 5
# RFC 8176 method references for the second factor; the first ("pwd", or "fed" for a tenant's
# own IdP) is prepended from the flow.
AMR_TOTP = ["otp", "mfa"]
AMR_PASSKEY = ["hwk", "mfa"]
PASSKEY_TICKET = "passkey-registration"
LOGOUT_TICKET = "logout-confirmation"
LOGOUT_SECONDS = 600
RECENT_SIGN_IN = timedelta(minutes=10)
SECOND_FACTOR_LOCKED = "Too many failed attempts: sign-in is blocked for a while. Try again later."


class NewPasskey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(max_length=2000)
    credential: dict[str, Any]
    name: str = Field(default="passkey", min_length=1, max_length=100)


@dataclass(frozen=True)
class IdentityHttp:
    issuer: str
    oauth: OAuthService
    authenticator: Authenticator
    flows: FlowCodec
    flow_store: FlowStore
    keys: KeyCache
    verifier: TokenVerifier
    bearer: BearerAuthenticator
    passkeys: Passkeys
    services: ServiceClients
    federation: Federation
    audit: AuditLog

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def cookie(self) -> str:
        # __Host- pins the cookie to our origin (Secure, Path=/, no Domain) where https allows.
        return "__Host-ramparts_login" if self.secure_cookies else "ramparts_login"


def build_router(deps: IdentityHttp) -> APIRouter:  # noqa: PLR0915 - one route table
    router = APIRouter(tags=["identity"])

    def page(
        request: Request,
        name: str,
        status: int = 200,
        *,
        leads_to: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """Render a template. `leads_to`: the client address this page's form ends up at
        (the CSP's form-action must allow its origin, or the browser stops the redirect)."""
        response = templates.TemplateResponse(request, name, context, status_code=status)
        if leads_to is not None:
            parts = urlsplit(leads_to)
            response.headers[FORM_ACTION_HEADER] = f"{parts.scheme}://{parts.netloc}"
        return response

    async def with_flow(request: Request, response: Response, flow: LoginFlow | None) -> Response:
        """Persist the flow (server-side) and point the cookie at it; None ends the flow."""
        if flow is None:
            await deps.flow_store.end(request.cookies.get(deps.cookie))
            response.delete_cookie(
                deps.cookie, path="/", secure=deps.secure_cookies, httponly=True, samesite="lax"
            )
            return response
        try:
            handle = await deps.flow_store.save(flow)
        except FlowConflict:
            return await expired(request)
        response.set_cookie(
            deps.cookie,
            handle,
            max_age=FLOW_SECONDS,
            path="/",
            secure=deps.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def current_flow(request: Request) -> LoginFlow | None:
        return await deps.flow_store.load(request.cookies.get(deps.cookie))

    async def expired(request: Request) -> Response:
        message = (
            "This sign-in has expired or is not valid. Go back to the application and start again."
        )
        return await with_flow(request, page(request, "error.html", 400, message=message), None)

    def redirect_error(
        redirect_uri: str, state: str | None, error: str, description: str
    ) -> Response:
        params = {"error": error, "error_description": description, "iss": deps.issuer}
        if state:
            params["state"] = state
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=303)

    async def body_params(request: Request) -> dict[str, str]:
        """A POST endpoint's parameters: in the form body only (RFC 6749 3.2, RFC 7009 2.1),
        so codes, verifiers and tokens never sit in a URL, each name at most once."""
        if request.query_params:
            raise OAuthError("invalid_request", "send the parameters in the form body")
        return single_valued((await request.form()).multi_items())

    async def no_repeated_params(request: Request) -> None:
        """For endpoints that take no parameters: a repeated one is refused all the same."""
        try:
            if request.method == "POST":
                await body_params(request)
            else:
                single_valued(request.query_params.multi_items())
        except OAuthError as exc:
            raise Problem(400, "invalid-request", "Invalid request", exc.description) from None

    @router.get(
        "/.well-known/openid-configuration",
        openapi_extra=declares(Exempt.PUBLIC),
        dependencies=[Depends(no_repeated_params)],
    )
    async def discovery() -> dict[str, Any]:
        base = deps.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/oauth/jwks",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "end_session_endpoint": f"{base}/oauth/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": sorted(SCOPES),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt", "tls_client_auth"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "tls_client_certificate_bound_access_tokens": True,
            "revocation_endpoint_auth_methods_supported": ["none"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "sid",
                "amr",
                "acr",
                "tenant",
                "preferred_username",
            ],
            "acr_values_supported": ["urn:ramparts:acr:mfa", "urn:ramparts:acr:phr"],
            "authorization_response_iss_parameter_supported": True,
        }

    @router.get(
        "/oauth/jwks",
        openapi_extra=declares(Exempt.PUBLIC),
        dependencies=[Depends(no_repeated_params)],
    )
    async def jwks() -> Response:
        ring = await deps.keys.ring()
        return JSONResponse(ring.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def malformed_authorize(request: Request, error: OAuthError) -> Response:
        """A repeated parameter at authorize: tell the client by redirect when the client and
        its redirect address are themselves unambiguous and registered, else show a page."""
        query = request.query_params
        client_ids, redirects = query.getlist("client_id"), query.getlist("redirect_uri")
        client = await deps.oauth.client(client_ids[0]) if len(client_ids) == 1 else None
        if client is None or len(redirects) != 1 or redirects[0] not in client.redirect_uris:
            return page(request, "error.html", 400, message="This sign-in request is not valid.")
        states = query.getlist("state")
        state = states[0] if len(states) == 1 else None
        return redirect_error(redirects[0], state, error.error, error.description)

    @router.get("/oauth/authorize", openapi_extra=declares(Exempt.PUBLIC))
    async def authorize(request: Request) -> Response:
        try:
            query = single_valued(request.query_params.multi_items())
        except OAuthError as exc:
            return await malformed_authorize(request, exc)
        client = await deps.oauth.client(query.get("client_id", ""))
        redirect_uri = query.get("redirect_uri", "")
        # Never redirect to an address we cannot vouch for (RFC 6749 4.1.2.1).
        if client is None or redirect_uri not in client.redirect_uris:
            return page(
                request, "error.html", 400, message="Unknown application or redirect address."
            )
        state = query.get("state")
        if query.get("response_type") != "code":
            return redirect_error(
                redirect_uri,
                state,
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        scopes = query.get("scope", "").split()
        if "openid" not in scopes or not set(scopes) <= SCOPES:
            return redirect_error(
                redirect_uri,
                state,
                "invalid_scope",
                f"scope must include openid and only {sorted(SCOPES)}",
            )
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not PKCE_CHALLENGE.match(challenge):
            return redirect_error(
                redirect_uri,
                state,
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            )
        flow = LoginFlow(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=" ".join(scopes),
            code_challenge=challenge,
            state=state,
            nonce=query.get("nonce"),
        )
        return await with_flow(request, RedirectResponse("/login", status_code=303), flow)

    @router.get("/login", openapi_extra=declares(Exempt.PUBLIC))
    async def login_page(request: Request) -> Response:
        flow = await current_flow(request)
        if flow is None:
            return await expired(request)
        return page(request, "login.html", csrf=flow.csrf, tenant="", username="")

    @router.post("/login", openapi_extra=declares(Exempt.PUBLIC))
    async def login(
        request: Request,
        tenant: Annotated[str, Form(max_length=63)],
        username: Annotated[str, Form(max_length=254)],
        password: Annotated[str, Form(max_length=128)],
        csrf: Annotated[str, Form(max_length=100)],
    ) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "password" or not flow.csrf_ok(csrf):
            return await expired(request)
        result = await deps.authenticator.password(
            tenant_slug=tenant.strip().lower(),
            username=username,
            password=password,
            address=_client_address(request),
        )
        if result is None:
            return page(
                request,
                "login.html",
                401,
                csrf=flow.csrf,
                tenant=tenant,
                username=username,
                error="Wrong organisation, username or password.",
            )
        flow.tenant_id, flow.user_id = str(result.tenant_id), str(result.user_id)
        flow.username = result.username
        return await second_factor_step(request, flow, has_totp=result.has_totp)

    async def second_factor_step(request: Request, flow: LoginFlow, *, has_totp: bool) -> Response:
        """After the first factor: ask for the second, or enrol one on first login."""
        tenant_id, user_id = _subject(flow)
        flow.has_passkey = await deps.passkeys.has_passkey(tenant_id, user_id)
        if has_totp or flow.has_passkey:
            flow.stage = "mfa"
            return await with_flow(request, RedirectResponse("/login/mfa", status_code=303), flow)
        # First login: a second factor must be enrolled before any token exists.
        flow.stage, flow.totp_secret = "enroll", pyotp.random_base32()
        return await with_flow(request, RedirectResponse("/login/enroll", status_code=303), flow)

    @router.post("/login/sso", openapi_extra=declares(Exempt.PUBLIC))
    async def sso(
        request: Request,
        tenant: Annotated[str, Form(max_length=63)],
        csrf: Annotated[str, Form(max_length=100)],
    ) -> Response:
        """Start federated login at the tenant's own identity provider."""
        flow = await current_flow(request)
        if flow is None or flow.stage != "password" or not flow.csrf_ok(csrf):
            return await expired(request)
        tenant_id = await deps.authenticator.tenant_id(tenant.strip().lower())
        idp = await deps.federation.provider(tenant_id) if tenant_id else None
        if idp is None:
            return page(
                request,
                "login.html",
                400,
                csrf=flow.csrf,
                tenant=tenant,
                username="",
                error="Single sign-on is not set up for this organisation.",
            )
        try:
            url, pending = await deps.federation.start(idp)
        except FederationError as exc:
            log.warning("federated_login_failed", reason=str(exc))
            return page(
                request,
                "error.html",
                502,
                message="The organisation's sign-in service did not answer. Try again later.",
            )
        flow.stage, flow.tenant_id, flow.federation = "sso", str(tenant_id), pending
        # A link, not a redirect: the CSP's form-action would stop a form's redirect to the
        # IdP, and the user should see where they are being sent.
        continue_page = page(request, "sso.html", url=url, host=urlsplit(url).netloc)
        return await with_flow(request, continue_page, flow)

    @router.get("/login/sso/callback", openapi_extra=declares(Exempt.PUBLIC))
    async def sso_callback(request: Request) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "sso" or not flow.federation or not flow.tenant_id:
            return await expired(request)
        try:  # the IdP's answer follows the same rules: one state, one code
            query = single_valued(request.query_params.multi_items())
        except OAuthError:
            return await expired(request)
        if not secrets.compare_digest(query.get("state", ""), flow.federation["state"]):
            return await expired(request)
        idp = await deps.federation.provider(uuid.UUID(flow.tenant_id))
        login: FederatedLogin | None = None
        if idp is not None:
            try:
                login = await deps.federation.finish(idp, flow.federation, str(request.url))
            except FederationError as exc:
                log.warning("federated_login_failed", reason=str(exc))
        if login is None:
            failed = page(
                request, "error.html", 401, message="Sign-in through your organisation failed."
            )
            return await with_flow(request, failed, None)
        flow.user_id, flow.username = str(login.user_id), login.username
        flow.first_factor, flow.federation = "fed", None
        if login.mfa_done:  # the IdP proved a second factor (its amr or acr says so)
            return await with_flow(
                request, RedirectResponse(await code_redirect(flow, ["fed", "mfa"]), 303), None
            )
        # The IdP proved only one factor: ours is still required.
        has_totp = await deps.authenticator.has_totp(uuid.UUID(flow.tenant_id), login.user_id)
        return await second_factor_step(request, flow, has_totp=has_totp)

    @router.get("/login/mfa", openapi_extra=declares(Exempt.PUBLIC))
    async def mfa_page(request: Request) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "mfa":
            return await expired(request)
        return page(
            request,
            "mfa.html",
            csrf=flow.csrf,
            has_passkey=flow.has_passkey,
            leads_to=flow.redirect_uri,
        )

    @router.post("/login/mfa", openapi_extra=declares(Exempt.PUBLIC))
    async def mfa(
        request: Request,
        otp: Annotated[str, Form(max_length=32)],
        csrf: Annotated[str, Form(max_length=100)],
    ) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "mfa" or not flow.csrf_ok(csrf):
            return await expired(request)
        tenant_id, user_id = _subject(flow)
        code, address = otp.strip(), _client_address(request)
        try:
            if code.isdigit():
                ok = await deps.authenticator.verify_totp(
                    tenant_id=tenant_id, user_id=user_id, code=code, address=address
                )
            else:  # a recovery code, for a lost authenticator
                ok = await deps.authenticator.use_recovery_code(
                    tenant_id=tenant_id, user_id=user_id, code=code, address=address
                )
        except SecondFactorLockedError:
            locked = page(request, "error.html", 429, message=SECOND_FACTOR_LOCKED)
            return await with_flow(request, locked, None)
        if not ok:
            return await retry_mfa(request, flow, "mfa.html")
        return await with_flow(
            request, RedirectResponse(await code_redirect(flow, AMR_TOTP), 303), None
        )

    def enroll_context(flow: LoginFlow) -> dict[str, Any]:
        secret = flow.totp_secret or ""
        uri = pyotp.TOTP(secret).provisioning_uri(name=flow.username or "", issuer_name="Ramparts")
        return {"csrf": flow.csrf, "secret": secret, "uri": uri}

    @router.get("/login/enroll", openapi_extra=declares(Exempt.PUBLIC))
    async def enroll_page(request: Request) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "enroll" or not flow.totp_secret:
            return await expired(request)
        return page(request, "enroll.html", **enroll_context(flow))

    @router.post("/login/enroll", openapi_extra=declares(Exempt.PUBLIC))
    async def enroll(
        request: Request,
        otp: Annotated[str, Form(max_length=10)],
        csrf: Annotated[str, Form(max_length=100)],
    ) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "enroll" or not flow.csrf_ok(csrf):
            return await expired(request)
        tenant_id, user_id = _subject(flow)
        # The flow began when the user had no factor; someone may have enrolled since.
        if await deps.authenticator.has_second_factor(tenant_id, user_id):
            return await expired(request)
        ok = await deps.authenticator.enroll_totp(
            tenant_id=tenant_id, user_id=user_id, secret=flow.totp_secret or "", code=otp.strip()
        )
        if not ok:
            return await retry_mfa(request, flow, "enroll.html")
        await enrolled(flow, AMR_TOTP)
        return await with_flow(request, RedirectResponse("/login/recovery", status_code=303), flow)

    async def enrolled(flow: LoginFlow, amr: list[str]) -> None:
        """A second factor was just enrolled: hand out recovery codes before the code."""
        tenant_id, user_id = _subject(flow)
        flow.recovery_codes = await deps.authenticator.replace_recovery_codes(
            tenant_id=tenant_id, user_id=user_id
        )
        flow.stage, flow.totp_secret, flow.amr = "recovery", None, amr

    @router.get("/login/recovery", openapi_extra=declares(Exempt.PUBLIC))
    async def recovery_page(request: Request) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "recovery" or not flow.recovery_codes:
            return await expired(request)
        return page(
            request,
            "recovery.html",
            csrf=flow.csrf,
            codes=flow.recovery_codes,
            leads_to=flow.redirect_uri,
        )

    @router.post("/login/continue", openapi_extra=declares(Exempt.PUBLIC))
    async def after_recovery_codes(
        request: Request, csrf: Annotated[str, Form(max_length=100)]
    ) -> Response:
        flow = await current_flow(request)
        if flow is None or flow.stage != "recovery" or not flow.csrf_ok(csrf) or not flow.amr:
            return await expired(request)
        return await with_flow(
            request, RedirectResponse(await code_redirect(flow, flow.amr), 303), None
        )

    async def retry_mfa(request: Request, flow: LoginFlow, template: str) -> Response:
        flow.mfa_failures += 1
        if flow.mfa_failures >= MAX_MFA_FAILURES:
            return await expired(request)
        context: dict[str, Any] = (
            enroll_context(flow) if template == "enroll.html" else {"csrf": flow.csrf}
        )
        context["has_passkey"] = flow.has_passkey
        leads_to = flow.redirect_uri if template == "mfa.html" else None
        response = page(
            request, template, 401, error="That code is not valid.", leads_to=leads_to, **context
        )
        return await with_flow(request, response, flow)

    async def passkey_flow(request: Request) -> LoginFlow:
        """The flow of a passkey call (JSON from our page's script, CSRF in a header)."""
        flow = await current_flow(request)
        csrf = request.headers.get("x-csrf-token", "")
        if flow is None or flow.stage not in {"mfa", "enroll"} or not flow.csrf_ok(csrf):
            raise Problem(
                400, "login-expired", "Sign-in expired", "start again from the application"
            )
        return flow

    @router.post("/login/passkey/options", openapi_extra=declares(Exempt.PUBLIC))
    async def passkey_options(request: Request) -> Response:
        flow = await passkey_flow(request)
        tenant_id, user_id = _subject(flow)
        try:
            if flow.stage == "enroll":
                ceremony = await deps.passkeys.registration(tenant_id, user_id, flow.username or "")
            else:
                ceremony = await deps.passkeys.authentication(tenant_id, user_id)
        except PasskeyError as exc:
            raise Problem(400, "passkey-refused", "Passkey refused", exc.detail) from None
        flow.challenge = ceremony.challenge
        return await with_flow(
            request, Response(ceremony.options_json, media_type="application/json"), flow
        )

    @router.post("/login/passkey", openapi_extra=declares(Exempt.PUBLIC))
    async def passkey(request: Request) -> Response:
        flow = await passkey_flow(request)
        tenant_id, user_id = _subject(flow)
        try:
            credential = await request.json()
        except ValueError:  # an empty body: the edge checked any other
            raise Problem(
                400, "malformed-json", "Malformed JSON", "send the credential as a JSON object"
            ) from None
        challenge, flow.challenge = flow.challenge, None  # each challenge is used once
        if not challenge or not isinstance(credential, dict):
            raise Problem(400, "passkey-refused", "Passkey refused", "no ceremony in progress")
        if flow.stage == "enroll" and await deps.authenticator.has_second_factor(
            tenant_id, user_id
        ):  # the flow began when the user had no factor; someone has enrolled since
            await deps.flow_store.end(flow.handle)
            raise Problem(400, "login-expired", "Sign-in expired", "start again")
        try:
            if flow.stage == "enroll":
                await deps.passkeys.register(tenant_id, user_id, challenge, credential)
                await enrolled(flow, AMR_PASSKEY)
                return await with_flow(request, JSONResponse({"next": "/login/recovery"}), flow)
            await deps.passkeys.authenticate(
                tenant_id, user_id, challenge, credential, _client_address(request)
            )
        except SecondFactorLockedError:
            locked = Problem(
                429, "second-factor-locked", "Second factor locked", SECOND_FACTOR_LOCKED
            )
            return await with_flow(request, locked.response(), None)
        except PasskeyError as exc:
            log.warning("passkey_refused", reason=str(exc))
            flow.mfa_failures += 1
            if flow.mfa_failures >= MAX_MFA_FAILURES:
                return await with_flow(
                    request,
                    Problem(
                        400, "login-expired", "Sign-in expired", "too many failed attempts"
                    ).response(),
                    None,
                )
            return await with_flow(
                request,
                Problem(401, "passkey-refused", "Passkey refused", exc.detail).response(),
                flow,
            )
        return await with_flow(
            request, JSONResponse({"next": await code_redirect(flow, AMR_PASSKEY)}), None
        )

    async def refused(principal: Principal, action: Action, problem: Problem) -> Problem:
        """Record a refused request of a signed-in caller and return the problem to raise."""
        await deps.audit.record_apart(
            principal.tenant_id,
            actor_of(principal),
            action,
            Resource("user", str(principal.user_id) if principal.user_id else None),
            Decision.DENY,
            {"reason": problem.detail, "status": problem.status},
        )
        return problem

    async def user_of(principal: Principal) -> uuid.UUID:
        """The signed-in person; a service client has no user account to act on."""
        if principal.user_id is None:
            raise await refused(
                principal,
                Action.USER_ENDPOINT_REFUSED,
                Problem(403, "not-a-user", "Forbidden", "this endpoint is for users, not services"),
            )
        return principal.user_id

    @router.post("/api/me/passkeys/options", openapi_extra=declares(Exempt.SELF))
    async def add_passkey_options(
        principal: Annotated[Principal, Depends(deps.bearer)],
    ) -> dict[str, Any]:
        """Start registering one more passkey for the signed-in user."""
        user = await user_of(principal)
        signed_in = principal.auth_time
        if signed_in is None or datetime.now(UTC) - signed_in > RECENT_SIGN_IN:
            raise await refused(
                principal,
                Action.PASSKEY_REFUSED,
                Problem(
                    403,
                    "reauthentication-required",
                    "Sign in again",
                    "adding a passkey needs a sign-in from the last 10 minutes",
                ),
            )
        ceremony = await deps.passkeys.registration(principal.tenant_id, user, str(user))
        await deps.passkeys.remember_challenge(principal.tenant_id, user, ceremony.challenge)
        ticket = deps.flows.seal(
            {
                "tenant": str(principal.tenant_id),
                "user": str(user),
                "challenge": ceremony.challenge,
            },
            PASSKEY_TICKET,
        )
        return {"options": json.loads(ceremony.options_json), "ticket": ticket}

    @router.post("/api/me/passkeys", status_code=201, openapi_extra=declares(Exempt.SELF))
    async def add_passkey(
        body: NewPasskey, principal: Annotated[Principal, Depends(deps.bearer)]
    ) -> dict[str, str]:
        user = await user_of(principal)
        ticket = deps.flows.open(body.ticket, PASSKEY_TICKET)
        reason = None
        if (
            ticket is None
            or ticket.get("tenant") != str(principal.tenant_id)
            or ticket.get("user") != str(user)
        ):
            reason = "invalid or expired ticket"
        elif not await deps.passkeys.take_challenge(
            principal.tenant_id, user, str(ticket["challenge"])
        ):
            reason = "ticket already used"
        else:
            try:
                await deps.passkeys.register(
                    principal.tenant_id, user, str(ticket["challenge"]), body.credential, body.name
                )
            except PasskeyError as exc:
                log.warning("passkey_refused", reason=str(exc))
                reason = exc.detail
        if reason is not None:
            raise await refused(
                principal,
                Action.PASSKEY_REFUSED,
                Problem(400, "passkey-refused", "Passkey refused", reason),
            )
        return {"status": "registered"}

    async def code_redirect(flow: LoginFlow, amr: list[str]) -> str:
        """Issue the authorization code and return the client redirect that carries it."""
        tenant_id, user_id = _subject(flow)
        if amr[0] not in {"pwd", "fed"}:
            amr = [flow.first_factor, *amr]
        code = await deps.oauth.create_code(
            tenant=tenant_id,
            user=user_id,
            client_id=flow.client_id,
            redirect_uri=flow.redirect_uri,
            code_challenge=flow.code_challenge,
            nonce=flow.nonce,
            scope=flow.scope,
            amr=amr,
            auth_time=datetime.now(UTC),
        )
        params = {"code": code, "iss": deps.issuer}
        if flow.state:
            params["state"] = flow.state
        return f"{flow.redirect_uri}?{urlencode(params)}"

    async def service_grant(fields: dict[str, str], request: Request) -> dict[str, Any]:
        """client_credentials for service clients (RFC 7523 / RFC 8705, RFC 8707)."""
        thumbprint = client_certificate_thumbprint(request.scope)
        if fields.get("client_assertion_type") == ASSERTION_TYPE:
            client = await deps.services.authenticate_assertion(fields.get("client_assertion", ""))
        elif thumbprint is not None:
            client = await deps.services.authenticate_certificate(
                fields.get("client_id", ""), thumbprint
            )
        else:
            raise OAuthError(
                "invalid_client", "authenticate with private_key_jwt or mTLS", status=401
            )
        if fields.get("client_id") not in {None, client.client_id}:
            raise OAuthError(
                "invalid_client", "client_id does not match the credential", status=401
            )
        resource = fields.get("resource")
        if not resource:
            raise OAuthError("invalid_target", "name the audience with the resource parameter")
        return await deps.services.token(client, resource, thumbprint)

    async def grant(fields: dict[str, str]) -> TokenResponse:
        client = await deps.oauth.client(fields.get("client_id", ""))
        if client is None or not client.is_public:
            raise OAuthError("invalid_client", "unknown client", status=401)
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            verifier = fields.get("code_verifier", "")
            if not PKCE_VERIFIER.match(verifier):
                raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
            return await deps.oauth.exchange_code(
                code=fields.get("code", ""),
                client_id=client.client_id,
                redirect_uri=fields.get("redirect_uri", ""),
                code_verifier=verifier,
            )
        if grant_type == "refresh_token":
            return await deps.oauth.refresh(
                refresh_token=fields.get("refresh_token", ""), client_id=client.client_id
            )
        raise OAuthError(
            "unsupported_grant_type",
            "supported: authorization_code, refresh_token, client_credentials (services)",
        )

    @router.post("/oauth/token", openapi_extra=declares(Exempt.PUBLIC))
    async def token(request: Request) -> Response:
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        fields: dict[str, str] = {}
        try:
            fields = await body_params(request)
            if fields.get("grant_type") == "client_credentials":
                body = await service_grant(fields, request)
            else:
                body = (await grant(fields)).body()
        except OAuthError as exc:
            error = exc
            # A refused request that carries a code redeemed before still revokes what the code
            # issued, whatever else is wrong with it; the exchange found its own replays. Only
            # refusals pay this lookup, and the answer is the generic invalid_grant.
            if not isinstance(exc, CodeReusedError) and await deps.oauth.revoke_reused_code(
                (fields.get("code"), fields.get("refresh_token")), fields.get("client_id", "")
            ):
                error = OAuthError("invalid_grant", "unknown, expired or already used code")
            return JSONResponse(error.body(), status_code=error.status, headers=no_store)
        return JSONResponse(body, headers=no_store)

    async def userinfo(
        _: Annotated[None, Depends(no_repeated_params)],
        principal: Annotated[Principal, Depends(deps.bearer)],
    ) -> dict[str, Any]:
        await user_of(principal)
        return {
            "sub": principal.subject,
            "tenant": str(principal.tenant_id),
            "roles": list(principal.roles),
            "amr": list(principal.amr),
            "acr": principal.acr,
        }

    # OIDC Core 5.3.1: the UserInfo endpoint answers GET and POST.
    _get_and_post(router, "/oauth/userinfo", userinfo, Exempt.SELF)

    @router.post("/oauth/revoke", openapi_extra=declares(Exempt.PUBLIC))
    async def revoke(request: Request) -> Response:
        """RFC 7009. A refresh token ends its family; an access token is revoked by jti."""
        try:
            form = await body_params(request)
        except OAuthError as exc:
            no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            return JSONResponse(exc.body(), status_code=exc.status, headers=no_store)
        token_value, client_id = form.get("token"), form.get("client_id")
        if token_value is not None and client_id is not None:
            if token_value.count(".") == 2:
                try:
                    claims = deps.verifier.verify(token_value, await deps.keys.ring())
                except TokenError:
                    claims = None
                if claims is not None and claims.client_id == client_id:
                    await deps.oauth.revoke_access_token(tenant=claims.tenant, jti=claims.jti)
            else:
                await deps.oauth.revoke(token=token_value, client_id=client_id)
        return Response(status_code=200)  # 2.2: the same answer for unknown tokens

    def logout_cookie(response: Response, value: str | None) -> Response:
        name = f"{deps.cookie}_logout"
        if value is None:
            response.delete_cookie(
                name, path="/", secure=deps.secure_cookies, httponly=True, samesite="strict"
            )
        else:
            response.set_cookie(
                name,
                value,
                max_age=LOGOUT_SECONDS,
                path="/",
                secure=deps.secure_cookies,
                httponly=True,
                samesite="strict",
            )
        return response

    def signed_out(request: Request, target: str | None, state: str | None) -> Response:
        if target is None:
            return page(
                request, "error.html", 200, message="You are signed out.", heading="Signed out"
            )
        suffix = f"?{urlencode({'state': state})}" if state else ""
        return RedirectResponse(target + suffix, status_code=303)

    async def logout(request: Request) -> Response:
        """OIDC RP-Initiated Logout (GET or POST). Nothing ends here: a hint is a bearer
        credential anyone who saw it holds, and this server keeps no session after sign-in to
        prove the request is the user's own, so the user confirms on a page first. The
        confirmation is bound to a SameSite=Strict cookie set with the page, so another site
        cannot submit it from the user's browser either. Whoever confirms ends only the sign-in
        the hint names (its `sid`), and only while it is live and the hint no older than a
        sign-in can last: a leaked hint cannot end the user's other sessions."""
        invalid = "This sign-out request is not valid."
        try:
            if request.method == "POST":
                query = await body_params(request)
            else:
                query = single_valued(request.query_params.multi_items())
        except OAuthError:
            return await with_flow(request, page(request, "error.html", 400, message=invalid), None)
        hint, target = query.get("id_token_hint"), query.get("post_logout_redirect_uri")
        proven: IdTokenHint | None = None
        if hint:
            try:
                proven = deps.verifier.verify_id_token_hint(
                    hint, await deps.keys.ring(), max_age=deps.oauth.family_lifetime
                )
            except TokenError:
                return await with_flow(
                    request, page(request, "error.html", 400, message=invalid), None
                )
        client = await deps.oauth.client(proven.client_id) if proven else None
        # Redirect only to an address registered by the client the hint proves.
        if target and (client is None or target not in client.post_logout_redirect_uris):
            return await with_flow(
                request,
                page(request, "error.html", 400, message="Unknown sign-out redirect address."),
                None,
            )
        if proven is None or client is None:  # no hint: there is no session here to end
            return await with_flow(request, signed_out(request, target, query.get("state")), None)
        if not await deps.oauth.session_live(proven):  # nothing left to end: a stale hint
            ended = "This sign-in has already ended."
            return await with_flow(request, page(request, "error.html", 400, message=ended), None)
        binding = secrets.token_urlsafe(32)
        ticket = deps.flows.seal(
            {
                "tenant": str(proven.tenant),
                "user": str(proven.user),
                "client": client.client_id,
                "session": str(proven.session),
                "target": target,
                "state": query.get("state"),
                "binding": binding,
                "expires": int(time.time()) + LOGOUT_SECONDS,
            },
            LOGOUT_TICKET,
        )
        confirm = page(
            request, "logout.html", client=client.client_id, ticket=ticket, leads_to=target
        )
        return logout_cookie(await with_flow(request, confirm, None), binding)

    # OIDC RP-Initiated Logout 1.0 section 2: the end-session endpoint answers GET and POST.
    _get_and_post(router, "/oauth/logout", logout, Exempt.PUBLIC)

    @router.post("/oauth/logout/confirm", openapi_extra=declares(Exempt.PUBLIC))
    async def confirm_logout(request: Request) -> Response:
        """The user pressed Sign out on the page `logout` showed, in this browser."""
        try:
            ticket = deps.flows.open((await body_params(request)).get("ticket", ""), LOGOUT_TICKET)
        except OAuthError:
            ticket = None
        bound = request.cookies.get(f"{deps.cookie}_logout", "")
        if (
            ticket is None
            or int(ticket.get("expires", 0)) < time.time()
            or not secrets.compare_digest(bound.encode(), str(ticket.get("binding")).encode())
        ):
            refused = page(
                request, "error.html", 400, message="This sign-out has expired. Start it again."
            )
            return logout_cookie(refused, None)
        await deps.oauth.end_session(
            IdTokenHint(
                tenant=uuid.UUID(ticket["tenant"]),
                user=uuid.UUID(ticket["user"]),
                client_id=str(ticket["client"]),
                session=uuid.UUID(ticket["session"]),
            )
        )
        return logout_cookie(signed_out(request, ticket.get("target"), ticket.get("state")), None)

    return router


def _get_and_post(
    router: APIRouter, path: str, endpoint: Callable[..., Any], exempt: Exempt
) -> None:
    """One endpoint at `path` for GET and POST; the schema documents the GET."""
    router.add_api_route(path, endpoint, methods=["GET"], openapi_extra=declares(exempt))
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        operation_id=f"{endpoint.__name__}_post",
        openapi_extra=declares(exempt),
        include_in_schema=False,
    )


def _subject(flow: LoginFlow) -> tuple[uuid.UUID, uuid.UUID]:
    """The tenant and user the first factor proved; absent means the flow is corrupt."""
    if not flow.tenant_id or not flow.user_id:
        raise RuntimeError("login flow reached MFA without a user")
    return uuid.UUID(flow.tenant_id), uuid.UUID(flow.user_id)


def _client_address(request: Request) -> str:
    """The address the login throttle counts failures against."""
    return request.client.host if request.client else "unknown"
