"""How a page's failures reach the browser: a refusal is a page in the layout, a missing
session is a trip to sign in, and a browser's address under `/app/` that is no page (or does
not parse) is a 404 page; the API's own errors stay problem+json.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from ramparts.problems import ProblemType, problem_response
from ramparts.routes import ACTION_KEY, Exempt
from ramparts.web.errors import http_error, validation_error
from ramparts.web.page import TITLES, Page, PageKit, PageProblem, SignInNeeded, signed_in

__all__ = ["install_page_handlers"]


def install_page_handlers(app: FastAPI) -> None:
    """A page's refusal is a page; a missing session is a trip to sign in; a browser's
    address under `/app/` that is no page is a 404 page (the API's stay problem+json)."""

    async def problem(request: Request, exc: PageProblem) -> Response:
        context = {"title": exc.title, "detail": exc.detail, "code": exc.status}
        page = await _page_of(request)
        if page is not None:  # in the signed-in layout, panel and all
            return page.render("error.html", exc.status, **context)
        kit: PageKit = request.app.state.pages
        return kit.render(request, "error.html", context, viewer=None, csrf=None, status=exc.status)

    async def sign_in(request: Request, exc: SignInNeeded) -> Response:
        kit: PageKit = request.app.state.pages
        if request.url.path.startswith("/app/api/"):  # a page script's call: it says so
            return problem_response(401, ProblemType.UNAUTHENTICATED, "sign in again")
        if request.method != "GET":
            # A form whose session is gone: nothing was sent; start again from the start page.
            return kit.sign_in_redirect("/app")
        return kit.sign_in_redirect(exc.next_path)

    async def missing(request: Request, exc: HTTPException) -> Response:
        """A person's browser asking for a page that is not there gets a page saying so;
        anything else gets the problem+json the API answers."""
        wants_page = request.url.path.startswith(
            ("/app/", "/pay/")
        ) and not request.url.path.startswith("/app/api/")
        if (
            exc.status_code == 404
            and wants_page
            and "text/html" in request.headers.get("accept", "")
        ):
            return await problem(
                request, PageProblem(404, TITLES[404], "There is no page at this address.")
            )
        return await http_error(request, exc)

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        """A page's address that does not parse (a malformed id, an unknown filter) is a page
        that says so; an API route keeps its problem+json."""
        route = request.scope.get("route")
        if (getattr(route, "openapi_extra", None) or {}).get(ACTION_KEY) != Exempt.PAGE:
            return await validation_error(request, exc)
        in_path = any(error.get("loc", ("",))[0] == "path" for error in exc.errors())
        status, detail = (
            (404, "There is no page at this address.")
            if in_path
            else (422, "Part of this address is not valid. Go back and try again.")
        )
        return await problem(request, PageProblem(status, TITLES[status], detail))

    app.add_exception_handler(PageProblem, problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, missing)  # type: ignore[arg-type]
    app.add_exception_handler(SignInNeeded, sign_in)  # type: ignore[arg-type]


async def _page_of(request: Request) -> Page | None:
    """The request's signed-in page for an error page: the one its route had, else the
    session's, if there is one."""
    page: Page | None = getattr(request.state, "page", None)
    if page is not None:
        return page
    try:
        return await signed_in(request)
    except SignInNeeded:
        return None
