"""The first factor of a sign-in: the password form, or the tenant's own identity provider.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

import secrets
import uuid
from typing import Annotated
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from ramparts.identity.federation import FederatedLogin, FederationError
from ramparts.identity.flow import LoginFlow
from ramparts.identity.oauth import OAuthError, single_valued
from ramparts.identity.views.dependencies import Identity
from ramparts.identity.views.pages import page
from ramparts.identity.views.second_factor import ask_second_factor
from ramparts.identity.views.signin_flow import (
    Flows,
    Submitted,
    any_flow,
    client_address,
    code_redirect,
    held,
    require_flow,
)
from ramparts.routes import Exempt, declares

__all__ = ["router"]

log = structlog.get_logger(__name__)
router = APIRouter(tags=["identity"])


class PasswordForm(BaseModel):
    """The password page's form (each step's form echoes the flow's CSRF token)."""

    tenant: str = Field(max_length=63)
    username: str = Field(max_length=254)
    password: str = Field(max_length=128)
    csrf: str = Field(max_length=100)


class SsoForm(BaseModel):
    """The password page's other button: sign in at the organisation's own provider."""

    tenant: str = Field(max_length=63)
    csrf: str = Field(max_length=100)


@router.get("/login", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def login_page(request: Request, flow: Annotated[LoginFlow, Depends(any_flow)]) -> Response:
    return page(request, "login.html", csrf=flow.csrf, tenant="", username="")


@router.post("/login", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def login(
    request: Request,
    identity: Identity,
    flows: Flows,
    step: Annotated[Submitted[PasswordForm], Depends(require_flow("password", PasswordForm))],
) -> Response:
    flow, form = step.flow, step.form
    result = await identity.authenticator.password(
        tenant_slug=form.tenant.strip().lower(),
        username=form.username,
        password=form.password,
        address=client_address(request),
    )
    if result is None:
        return page(
            request,
            "login.html",
            401,
            csrf=flow.csrf,
            tenant=form.tenant,
            username=form.username,
            error="Wrong organisation, username or password.",
        )
    flow.tenant_id, flow.user_id = str(result.tenant_id), str(result.user_id)
    flow.username = result.username
    return await ask_second_factor(identity, flows, flow, has_totp=result.has_totp)


@router.post("/login/sso", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def sso(
    request: Request,
    identity: Identity,
    flows: Flows,
    step: Annotated[Submitted[SsoForm], Depends(require_flow("password", SsoForm))],
) -> Response:
    """Start federated login at the tenant's own identity provider."""
    flow, tenant = step.flow, step.form.tenant
    tenant_id = await identity.authenticator.tenant_id(tenant.strip().lower())
    idp = await identity.federation.provider(tenant_id) if tenant_id else None
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
        url, pending = await identity.federation.start(idp)
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
    return await flows.keep(continue_page, flow)


def _federating(flow: LoginFlow) -> bool:
    return bool(flow.federation and flow.tenant_id)


@router.get(
    "/login/sso/callback", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC)
)
async def sso_callback(
    request: Request,
    identity: Identity,
    flows: Flows,
    flow: Annotated[LoginFlow, Depends(require_flow("sso", ready=_federating))],
) -> Response:
    pending, tenant_id = held(flow.federation), uuid.UUID(held(flow.tenant_id))
    try:  # the IdP's answer follows the same rules: one state, one code
        query = single_valued(request.query_params.multi_items())
    except OAuthError:
        return await flows.expired()
    if not secrets.compare_digest(query.get("state", ""), pending["state"]):
        return await flows.expired()
    idp = await identity.federation.provider(tenant_id)
    federated: FederatedLogin | None = None
    if idp is not None:
        try:
            federated = await identity.federation.finish(idp, pending, str(request.url))
        except FederationError as exc:
            log.warning("federated_login_failed", reason=str(exc))
    if federated is None:
        failed = page(
            request, "error.html", 401, message="Sign-in through your organisation failed."
        )
        return await flows.end(failed)
    flow.user_id, flow.username = str(federated.user_id), federated.username
    flow.first_factor, flow.federation = "fed", None
    if federated.mfa_done:  # the IdP proved a second factor (its amr or acr says so)
        return await flows.end(
            RedirectResponse(await code_redirect(identity, flow, ["fed", "mfa"]), 303)
        )
    # The IdP proved only one factor: ours is still required.
    has_totp = await identity.authenticator.has_totp(tenant_id, federated.user_id)
    return await ask_second_factor(identity, flows, flow, has_totp=has_totp)
