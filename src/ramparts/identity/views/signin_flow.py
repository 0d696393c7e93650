"""The sign-in flow as the routes see it: the cookie that points at it, the guard each step
of the sign-in puts in front of its handler, and the authorization code that ends it.

A step's guard (`require_flow`) lets a request through only when the browser's flow is at
that step and, for a form, echoes the flow's CSRF token; anything else ends the flow and
answers the "expired" page. A form is read before its flow is looked at, so a malformed form
answers 422 whatever the flow.

No `from __future__ import annotations`: FastAPI evaluates the guards' signatures.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar, cast
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import Response

from ramparts.identity.flow import FLOW_SECONDS, FlowConflict, LoginFlow
from ramparts.identity.views.dependencies import Identity, IdentityHttp
from ramparts.identity.views.pages import page
from ramparts.problems import Problem, ProblemType

if TYPE_CHECKING:
    from starlette.types import ExceptionHandler

__all__ = [
    "FlowCookie",
    "Flows",
    "SignInExpired",
    "Submitted",
    "any_flow",
    "client_address",
    "code_redirect",
    "held",
    "install_expired_handler",
    "passkey_flow",
    "require_flow",
    "subject",
]


class SignInExpired(Exception):  # noqa: N818 - a condition, answered with a page
    """Raised by a guard: the sign-in cannot go on. Carries the page that says so (the flow
    already ended)."""

    def __init__(self, response: Response) -> None:
        super().__init__("sign-in expired")
        self.response = response


async def _expired_page(_: Request, exc: SignInExpired) -> Response:
    return exc.response


def install_expired_handler(app: FastAPI) -> None:
    """Answer a guard's `SignInExpired` with the page it carries."""
    # Starlette types handlers as taking any Exception; this one is registered for its class.
    app.add_exception_handler(SignInExpired, cast("ExceptionHandler", _expired_page))


class FlowCookie:
    """The sign-in flow the browser's cookie points at, for one request (a FastAPI
    dependency). The flow itself is stored server-side; the cookie holds only its id."""

    def __init__(self, request: Request, identity: Identity) -> None:
        self._request = request
        self._identity = identity

    async def load(self) -> LoginFlow | None:
        return await self._identity.flow_store.load(
            self._request.cookies.get(self._identity.cookie)
        )

    async def keep(self, response: Response, flow: LoginFlow) -> Response:
        """Persist the flow and point the cookie at it; a flow another request moved on
        meanwhile (a replay, a double submit) has expired."""
        identity = self._identity
        try:
            handle = await identity.flow_store.save(flow)
        except FlowConflict:
            return await self.expired()
        response.set_cookie(
            identity.cookie,
            handle,
            max_age=FLOW_SECONDS,
            path="/",
            secure=identity.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return response

    async def end(self, response: Response) -> Response:
        """End the flow and drop its cookie."""
        identity = self._identity
        await identity.flow_store.end(self._request.cookies.get(identity.cookie))
        response.delete_cookie(
            identity.cookie, path="/", secure=identity.secure_cookies, httponly=True, samesite="lax"
        )
        return response

    async def expired(self) -> Response:
        message = (
            "This sign-in has expired or is not valid. Go back to the application and start again."
        )
        return await self.end(page(self._request, "error.html", 400, message=message))


Flows = Annotated[FlowCookie, Depends()]


class FlowForm(Protocol):
    """A sign-in step's form: whatever it asks, it echoes the flow's CSRF token."""

    csrf: str


FormT = TypeVar("FormT", bound=FlowForm)
Guard = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Submitted(Generic[FormT]):
    """A step's form, and the flow it was submitted in."""

    flow: LoginFlow
    form: FormT


def _always(_: LoginFlow) -> bool:
    return True


async def any_flow(flows: Flows) -> LoginFlow:
    """The browser's flow, at whatever step it is (the sign-in page can be shown again)."""
    flow = await flows.load()
    if flow is None:
        raise SignInExpired(await flows.expired())
    return flow


def require_flow(
    stage: str,
    form: type[FormT] | None = None,
    *,
    ready: Callable[[LoginFlow], object] = _always,
) -> Guard:
    """A dependency: the browser's flow, at `stage` and `ready` for the step (holding what the
    step shows or uses). With `form` (a pydantic model read from the form body), the step's
    `Submitted` form instead, whose CSRF token must be the flow's."""

    if form is None:

        async def shown(flows: Flows) -> LoginFlow:
            flow = await flows.load()
            if flow is None or flow.stage != stage or not ready(flow):
                raise SignInExpired(await flows.expired())
            return flow

        return shown

    async def submitted(flows: Flows, fields: FormT) -> Submitted[FormT]:
        flow = await flows.load()
        if flow is None or flow.stage != stage or not flow.csrf_ok(fields.csrf) or not ready(flow):
            raise SignInExpired(await flows.expired())
        return Submitted(flow, fields)

    # What FastAPI reads: the form body, into the model this guard was made for (a type known
    # only here, so it cannot be written in the signature).
    submitted.__annotations__["fields"] = Annotated[form, Form()]
    return submitted


async def passkey_flow(request: Request, flows: Flows) -> LoginFlow:
    """The flow of a passkey call (JSON from our page's script, CSRF in a header); refused
    with a problem, which the script shows, and the flow kept."""
    flow = await flows.load()
    csrf = request.headers.get("x-csrf-token", "")
    if flow is None or flow.stage not in {"mfa", "enroll"} or not flow.csrf_ok(csrf):
        raise Problem(400, ProblemType.LOGIN_EXPIRED, "start again from the application")
    return flow


HeldT = TypeVar("HeldT")


def held(value: HeldT | None) -> HeldT:
    """What a step's guard saw the flow hold (`ready`); absent means the flow is corrupt."""
    if not value:
        raise RuntimeError("login flow lost what its step's guard saw")
    return value


def subject(flow: LoginFlow) -> tuple[uuid.UUID, uuid.UUID]:
    """The tenant and user the first factor proved; absent means the flow is corrupt."""
    if not flow.tenant_id or not flow.user_id:
        raise RuntimeError("login flow reached MFA without a user")
    return uuid.UUID(flow.tenant_id), uuid.UUID(flow.user_id)


async def code_redirect(identity: IdentityHttp, flow: LoginFlow, amr: list[str]) -> str:
    """Issue the authorization code and return the client redirect that carries it."""
    tenant_id, user_id = subject(flow)
    if amr[0] not in {"pwd", "fed"}:
        amr = [flow.first_factor, *amr]
    code = await identity.oauth.create_code(
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
    params = {"code": code, "iss": identity.issuer}
    if flow.state:
        params["state"] = flow.state
    return f"{flow.redirect_uri}?{urlencode(params)}"


def client_address(request: Request) -> str:
    """The address the login throttle counts failures against."""
    return request.client.host if request.client else "unknown"
