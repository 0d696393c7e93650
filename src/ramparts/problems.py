"""RFC 9457 problem details: the only shape an error leaves the server in.

Each kind of error has a stable `type` URI (`urn:ramparts:problem:<slug>`) that clients and
tests match on; `title` is fixed per type, `detail` says what was wrong with this request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["PROBLEM_JSON", "Problem", "problem_response"]

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ramparts:problem:"


class Problem(Exception):  # noqa: N818 - named for RFC 9457 "problem details"
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> JSONResponse:
        return problem_response(
            self.status, self.slug, self.title, self.detail, headers=self.headers, **self.extensions
        )


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)
