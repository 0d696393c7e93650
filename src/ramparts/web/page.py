"""What every page of the web app stands on: the signed-in viewer, the API as that viewer,
CSRF, and rendering into the one layout.

A page acts only through the HTTP API, in process, with the session's access token
(`Page.api`): the same gate, Cedar decisions, row-level security, idempotency and audit as any
client, so no page can do what its user could not do with a token, and there is one
enforcement point per concern. A page renders what the API answered; a refusal becomes a page
that says what was refused (`PageProblem`).

Page routes declare `page` (`ramparts.routes.Exempt.PAGE`): the permission gate lets them by,
and `SignedIn` / `Posted` (FastAPI dependencies) require the session instead, and for a form,
its CSRF token and our own origin.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from starlette.templating import Jinja2Templates

from ramparts.apps.contract import NavLink
from ramparts.web.sessions import BrowserSession, BrowserSessions

__all__ = [
    "ApiAnswer",
    "Page",
    "PageKit",
    "PageProblem",
    "Posted",
    "SignInNeeded",
    "SignedIn",
    "money",
]

RUNTIME_TEMPLATES = Path(__file__).parent / "templates"
START = "/app"  # the signed-in start page
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Viewer:
    """Who the page is for, as their access token says (for the layout, never to decide)."""

    user_id: uuid.UUID
    tenant_id: uuid.UUID
    username: str
    roles: tuple[str, ...]
    amr: tuple[str, ...]


class PageProblem(Exception):  # noqa: N818 - shown as a page, like `Problem` as JSON
    """A page that cannot be shown or a form that was refused: rendered as an error page."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class SignInNeeded(Exception):  # noqa: N818 - a redirect, not an error
    """No live session: the browser goes to sign in, and comes back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class ApiAnswer:
    """What the API answered a page: its status and JSON body (a problem's too)."""

    status: int
    body: Any
    retry_after: str | None = None  # a rate limit's `Retry-After`, seconds

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or "")
        return ""

    def json(self) -> Any:
        """The body of a success; anything else becomes the matching error page."""
        if not self.ok:
            raise refused(self)
        return self.body


TITLES = {
    400: "That request could not be used",
    402: "The card was declined",
    403: "You do not have permission",
    404: "Not found",
    409: "Not possible right now",
    422: "Please check what you entered",
    429: "Too many attempts",
    502: "A partner service did not answer",
    503: "Not available right now",
}


def refused(answer: ApiAnswer) -> PageProblem:
    """The error page for an API refusal, in the API's own words (a 403 names the permission
    that is missing; a 404 is the same whether the thing is elsewhere or nowhere)."""
    status = answer.status if answer.status >= 400 else 500
    title = TITLES.get(status, "Something went wrong")
    detail = answer.detail
    if status == 403 and detail:
        # The API says "<action> is not allowed here": the page names the permission.
        action = detail.removesuffix(" is not allowed here")
        detail = (
            f"This needs the permission {action}, which you do not have."
            if action != detail
            else f"{detail[:1].upper()}{detail[1:]}."
        )
    elif status == 404:
        detail = "There is nothing here, or it is not yours to see."
    return PageProblem(status, title, detail or title)


def money(amount: int | None, currency: str | None) -> str:
    """Minor units as the amount a person reads: `2,393.00 EUR`."""
    if amount is None or currency is None:
        return "—"
    return f"{amount / 100:,.2f} {currency.upper()}"


class Api:
    """The HTTP API in process, as the signed-in user (their bearer token)."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self._client = client
        self._token = token

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiAnswer:
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        response = await self._client.request(
            method, path, json=json_body, params=params, headers=headers
        )
        if response.status_code == 401:
            raise SignInNeeded("/app")  # the session's tokens were revoked
        body: Any = None
        if response.content and "json" in response.headers.get("content-type", ""):
            body = response.json()
        return ApiAnswer(response.status_code, body, response.headers.get("retry-after"))

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> ApiAnswer:
        return await self.call("GET", path, params=params)

    async def post(
        self, path: str, body: Any = None, *, idempotency_key: str | None = None
    ) -> ApiAnswer:
        return await self.call(
            "POST", path, json_body={} if body is None else body, idempotency_key=idempotency_key
        )


@dataclass
class PageKit:
    """The web app's shared parts (`app.state.pages`): sessions, the layout's templates
    (the runtime's, and each app's under its name: `<app>/...`), the navigation, and the
    in-process client of the API."""

    sessions: BrowserSessions
    public_url: str
    nav: list[NavLink] = field(default_factory=list)
    app_templates: dict[str, Path] = field(default_factory=dict)
    #: What the apps served are (their titles), for the home page before sign-in.
    app_titles: list[str] = field(default_factory=list)
    cookie_secure: bool = False
    #: What the layout's assistant panel shows on a signed-in page (`web.assistant`), loaded
    #: through the API before a page is drawn.
    panel: Callable[[Page], Awaitable[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        loader = jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(RUNTIME_TEMPLATES),
                jinja2.PrefixLoader(
                    {
                        name: jinja2.FileSystemLoader(folder)
                        for name, folder in self.app_templates.items()
                    }
                ),
            ]
        )
        environment = jinja2.Environment(loader=loader, autoescape=True)
        environment.filters["money"] = money
        environment.filters["when"] = _when
        self.templates = Jinja2Templates(env=environment)
        self._client: httpx.AsyncClient | None = None

    @property
    def cookie(self) -> str:
        # __Host- pins the cookie to our origin (Secure, Path=/, no Domain) where https allows.
        return "__Host-ramparts_session" if self.cookie_secure else "ramparts_session"

    def client(self, app: FastAPI) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 0)),
                base_url=self.public_url,
                timeout=60,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        viewer: Viewer | None,
        csrf: str | None,
        status: int = 200,
    ) -> HTMLResponse:
        nav = [link for link in self.nav if viewer is not None and link.shown_to(viewer.roles)]
        path = request.url.path
        # The one link the page is under: the longest whose path leads to this page (the
        # start page only for itself: every page's path starts with it).
        current = max(
            (
                link.path
                for link in nav
                if path == link.path or (link.path != START and path.startswith(link.path + "/"))
            ),
            key=len,
            default=None,
        )
        return self.templates.TemplateResponse(
            request,
            name,
            # `path`: the panel's way back to this page, and the admin's current tab.
            {
                **context,
                "viewer": viewer,
                "csrf": csrf,
                "nav": nav,
                "current": current,
                "path": path,
            },
            status_code=status,
            headers={"cache-control": "no-store"},
        )

    def sign_in_redirect(self, next_path: str) -> RedirectResponse:
        return RedirectResponse(
            f"/app/login?{urlencode({'next': next_path}, safe='/')}", status_code=303
        )


def _when(value: str | datetime | None) -> Markup | str:
    """A timestamp as a `<time>` that `app.js` shows in the reader's own zone (UTC without
    script)."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return Markup('<time datetime="{}">{}</time>').format(
        moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M UTC")
    )


@dataclass
class Page:
    """One request of a signed-in page: `api` acts as its viewer; `render` draws a template
    in the layout (navigation, assistant panel, CSRF token for its forms)."""

    request: Request
    kit: PageKit
    session: BrowserSession
    viewer: Viewer
    api: Api
    assistant: dict[str, Any] = field(default_factory=dict)  # the panel's (`PageKit.panel`)

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        # The panel's own name, set last: a page's context never replaces it.
        context = {**context, "assistant_panel": self.assistant}
        return self.kit.render(
            self.request, name, context, viewer=self.viewer, csrf=self.session.csrf, status=status
        )

    def redirect(self, path: str) -> RedirectResponse:
        """After a form: see the result on its page (303, so a reload does not resend)."""
        return RedirectResponse(local_path(path), status_code=303)

    def has_role(self, *roles: str) -> bool:
        return bool(set(roles) & set(self.viewer.roles))


def local_path(path: str) -> str:
    """Only a path of ours: never an open redirect."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return "/app"
    return path


def token_payload(token: str) -> dict[str, Any]:
    """The claims of a token our own token endpoint just issued in process, for the layout
    only: the API verifies the token itself on every call, and a page decides nothing from
    these."""
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) or b"{}")
    return decoded if isinstance(decoded, dict) else {}


async def signed_in(request: Request) -> Page:
    kit: PageKit = request.app.state.pages
    session = await kit.sessions.load(request.cookies.get(kit.cookie))
    if session is None:
        raise SignInNeeded(request.url.path)
    claims = token_payload(session.access_token)
    viewer = Viewer(
        user_id=session.user_id,
        tenant_id=session.tenant_id,
        username=session.username,
        roles=tuple(claims.get("roles") or ()),
        amr=tuple(claims.get("amr") or ()),
    )
    page = Page(request, kit, session, viewer, Api(kit.client(request.app), session.access_token))
    # A page drawn for the browser shows the panel; a page script's call draws nothing.
    if kit.panel is not None and not request.url.path.startswith("/app/api/"):
        page.assistant = await kit.panel(page)
    request.state.page = page  # an error page of this request draws in it too
    return page


async def posted(request: Request, page: Annotated[Page, Depends(signed_in)]) -> Page:
    """A form's page: it must come from our own origin and carry the session's CSRF token
    (a form field, or the header the page scripts send)."""
    origin = request.headers.get("origin")
    ours = urlsplit(page.kit.public_url)
    if origin is not None and origin != f"{ours.scheme}://{ours.netloc}":
        raise PageProblem(403, "This form came from another site", "It was not sent.")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and "form" in request.headers.get("content-type", ""):
        presented = str((await request.form()).get(CSRF_FIELD) or "")
    if not page.session.csrf_ok(presented):
        raise PageProblem(
            403, "This form has expired", "Reload the page and send it again: nothing was changed."
        )
    return page


SignedIn = Annotated[Page, Depends(signed_in)]
Posted = Annotated[Page, Depends(posted)]
