"""The second factor of a sign-in: a TOTP code, a recovery code or a passkey, enrolled with
recovery codes on first sign-in; the authorization code once it is proven.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

from typing import Annotated, Any

import pyotp
import segno
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import BaseModel, Field

from ramparts.identity.flow import LoginFlow
from ramparts.identity.lockout import SecondFactorLockedError
from ramparts.identity.passkeys import PasskeyError
from ramparts.identity.views.dependencies import Identity, IdentityHttp
from ramparts.identity.views.pages import page
from ramparts.identity.views.signin_flow import (
    FlowCookie,
    Flows,
    Submitted,
    client_address,
    code_redirect,
    held,
    passkey_flow,
    require_flow,
    subject,
)
from ramparts.problems import Problem, ProblemType
from ramparts.routes import Exempt, declares

__all__ = ["ask_second_factor", "router"]

log = structlog.get_logger(__name__)
router = APIRouter(tags=["identity"])

MAX_MFA_FAILURES = 5
# RFC 8176 method references for the second factor; the first ("pwd", or "fed" for a tenant's
# own IdP) is prepended from the flow.
AMR_TOTP = ["otp", "mfa"]
AMR_PASSKEY = ["hwk", "mfa"]
SECOND_FACTOR_LOCKED = "Too many failed attempts: sign-in is blocked for a while. Try again later."


class MfaForm(BaseModel):
    """A TOTP code, or a recovery code for a lost authenticator."""

    otp: str = Field(max_length=32)
    csrf: str = Field(max_length=100)


class EnrollForm(BaseModel):
    """The first TOTP code of the authenticator being enrolled."""

    otp: str = Field(max_length=10)
    csrf: str = Field(max_length=100)


class ContinueForm(BaseModel):
    """The recovery codes page's form: the user has saved them."""

    csrf: str = Field(max_length=100)


async def ask_second_factor(
    identity: IdentityHttp, flows: FlowCookie, flow: LoginFlow, *, has_totp: bool
) -> Response:
    """After the first factor: ask for the second, or enrol one on first login."""
    tenant_id, user_id = subject(flow)
    flow.has_passkey = await identity.passkeys.has_passkey(tenant_id, user_id)
    if has_totp or flow.has_passkey:
        flow.stage = "mfa"
        return await flows.keep(RedirectResponse("/login/mfa", status_code=303), flow)
    # First login: a second factor must be enrolled before any token exists.
    flow.stage, flow.totp_secret = "enroll", pyotp.random_base32()
    return await flows.keep(RedirectResponse("/login/enroll", status_code=303), flow)


@router.get("/login/mfa", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def mfa_page(
    request: Request, flow: Annotated[LoginFlow, Depends(require_flow("mfa"))]
) -> Response:
    return page(
        request,
        "mfa.html",
        csrf=flow.csrf,
        has_passkey=flow.has_passkey,
        leads_to=flow.redirect_uri,
    )


@router.post("/login/mfa", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def mfa(
    request: Request,
    identity: Identity,
    flows: Flows,
    step: Annotated[Submitted[MfaForm], Depends(require_flow("mfa", MfaForm))],
) -> Response:
    flow = step.flow
    tenant_id, user_id = subject(flow)
    code, address = step.form.otp.strip(), client_address(request)
    try:
        if code.isdigit():
            ok = await identity.authenticator.verify_totp(
                tenant_id=tenant_id, user_id=user_id, code=code, address=address
            )
        else:  # a recovery code, for a lost authenticator
            ok = await identity.authenticator.use_recovery_code(
                tenant_id=tenant_id, user_id=user_id, code=code, address=address
            )
    except SecondFactorLockedError:
        return await flows.end(page(request, "error.html", 429, message=SECOND_FACTOR_LOCKED))
    if not ok:
        return await _retry_mfa(request, flows, flow, "mfa.html")
    return await flows.end(RedirectResponse(await code_redirect(identity, flow, AMR_TOTP), 303))


def _enroll_context(flow: LoginFlow) -> dict[str, Any]:
    secret = flow.totp_secret or ""
    uri = pyotp.TOTP(secret).provisioning_uri(name=flow.username or "", issuer_name="Ramparts")
    return {"csrf": flow.csrf, "secret": secret, "uri": uri, "qr": _qr_code(uri)}


def _qr_code(uri: str) -> Markup:
    """The provisioning URI as a QR code drawn here, an inline `<svg>` (SVG attributes only,
    no style, no script): the secret never leaves in an image request to anyone."""
    code = segno.make(uri, error="m")
    svg = code.svg_inline(
        scale=4,
        border=4,
        dark="#000",
        light="#fff",
        svgclass="qr",
        title="QR code of your new authenticator key",
    )
    return Markup(svg)  # noqa: S704  # nosec B704 # segno's SVG: path data and our own title, no input


def _enrolling(flow: LoginFlow) -> bool:
    return bool(flow.totp_secret)


@router.get("/login/enroll", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def enroll_page(
    request: Request,
    flow: Annotated[LoginFlow, Depends(require_flow("enroll", ready=_enrolling))],
) -> Response:
    return page(request, "enroll.html", **_enroll_context(flow))


@router.post("/login/enroll", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def enroll(
    request: Request,
    identity: Identity,
    flows: Flows,
    step: Annotated[Submitted[EnrollForm], Depends(require_flow("enroll", EnrollForm))],
) -> Response:
    flow = step.flow
    tenant_id, user_id = subject(flow)
    # The flow began when the user had no factor; someone may have enrolled since.
    if await identity.authenticator.has_second_factor(tenant_id, user_id):
        return await flows.expired()
    ok = await identity.authenticator.enroll_totp(
        tenant_id=tenant_id,
        user_id=user_id,
        secret=flow.totp_secret or "",
        code=step.form.otp.strip(),
    )
    if not ok:
        return await _retry_mfa(request, flows, flow, "enroll.html")
    await _enrolled(identity, flow, AMR_TOTP)
    return await flows.keep(RedirectResponse("/login/recovery", status_code=303), flow)


async def _enrolled(identity: IdentityHttp, flow: LoginFlow, amr: list[str]) -> None:
    """A second factor was just enrolled: hand out recovery codes before the code."""
    tenant_id, user_id = subject(flow)
    flow.recovery_codes = await identity.authenticator.replace_recovery_codes(
        tenant_id=tenant_id, user_id=user_id
    )
    flow.stage, flow.totp_secret, flow.amr = "recovery", None, amr


def _showing_codes(flow: LoginFlow) -> bool:
    return bool(flow.recovery_codes)


@router.get("/login/recovery", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def recovery_page(
    request: Request,
    flow: Annotated[LoginFlow, Depends(require_flow("recovery", ready=_showing_codes))],
) -> Response:
    return page(
        request,
        "recovery.html",
        csrf=flow.csrf,
        codes=flow.recovery_codes,
        leads_to=flow.redirect_uri,
    )


def _second_factor_proven(flow: LoginFlow) -> bool:
    return bool(flow.amr)


@router.post("/login/continue", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def after_recovery_codes(
    identity: Identity,
    flows: Flows,
    step: Annotated[
        Submitted[ContinueForm],
        Depends(require_flow("recovery", ContinueForm, ready=_second_factor_proven)),
    ],
) -> Response:
    flow = step.flow
    amr = held(flow.amr)
    return await flows.end(RedirectResponse(await code_redirect(identity, flow, amr), 303))


async def _retry_mfa(
    request: Request, flows: FlowCookie, flow: LoginFlow, template: str
) -> Response:
    flow.mfa_failures += 1
    if flow.mfa_failures >= MAX_MFA_FAILURES:
        return await flows.expired()
    context: dict[str, Any] = (
        _enroll_context(flow) if template == "enroll.html" else {"csrf": flow.csrf}
    )
    context["has_passkey"] = flow.has_passkey
    leads_to = flow.redirect_uri if template == "mfa.html" else None
    response = page(
        request, template, 401, error="That code is not valid.", leads_to=leads_to, **context
    )
    return await flows.keep(response, flow)


@router.post("/login/passkey/options", openapi_extra=declares(Exempt.PUBLIC))
async def passkey_options(
    identity: Identity, flows: Flows, flow: Annotated[LoginFlow, Depends(passkey_flow)]
) -> Response:
    tenant_id, user_id = subject(flow)
    try:
        if flow.stage == "enroll":
            ceremony = await identity.passkeys.registration(tenant_id, user_id, flow.username or "")
        else:
            ceremony = await identity.passkeys.authentication(tenant_id, user_id)
    except PasskeyError as exc:
        raise Problem(400, ProblemType.PASSKEY_REFUSED, exc.detail) from None
    flow.challenge = ceremony.challenge
    return await flows.keep(Response(ceremony.options_json, media_type="application/json"), flow)


@router.post("/login/passkey", openapi_extra=declares(Exempt.PUBLIC))
async def passkey(
    request: Request,
    identity: Identity,
    flows: Flows,
    flow: Annotated[LoginFlow, Depends(passkey_flow)],
) -> Response:
    tenant_id, user_id = subject(flow)
    try:
        credential = await request.json()
    except ValueError:  # an empty body: the edge checked any other
        raise Problem(
            400, ProblemType.MALFORMED_JSON, "send the credential as a JSON object"
        ) from None
    challenge, flow.challenge = flow.challenge, None  # each challenge is used once
    if not challenge or not isinstance(credential, dict):
        raise Problem(400, ProblemType.PASSKEY_REFUSED, "no ceremony in progress")
    if flow.stage == "enroll" and await identity.authenticator.has_second_factor(
        tenant_id, user_id
    ):  # the flow began when the user had no factor; someone has enrolled since
        await identity.flow_store.end(flow.handle)
        raise Problem(400, ProblemType.LOGIN_EXPIRED, "start again")
    try:
        if flow.stage == "enroll":
            await identity.passkeys.register(tenant_id, user_id, challenge, credential)
            await _enrolled(identity, flow, AMR_PASSKEY)
            return await flows.keep(JSONResponse({"next": "/login/recovery"}), flow)
        await identity.passkeys.authenticate(
            tenant_id, user_id, challenge, credential, client_address(request)
        )
    except SecondFactorLockedError:
        locked = Problem(429, ProblemType.SECOND_FACTOR_LOCKED, SECOND_FACTOR_LOCKED)
        return await flows.end(locked.response())
    except PasskeyError as exc:
        log.warning("passkey_refused", reason=str(exc))
        flow.mfa_failures += 1
        if flow.mfa_failures >= MAX_MFA_FAILURES:
            return await flows.end(
                Problem(400, ProblemType.LOGIN_EXPIRED, "too many failed attempts").response()
            )
        return await flows.keep(
            Problem(401, ProblemType.PASSKEY_REFUSED, exc.detail).response(), flow
        )
    return await flows.end(JSONResponse({"next": await code_redirect(identity, flow, AMR_PASSKEY)}))
