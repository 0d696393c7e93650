"""Ramparts' own schemathesis checks, beside its built-in ones (loaded as SCHEMATHESIS_HOOKS).

- `refusals_are_problems`: every 4xx is RFC 9457 problem+json (`type`, `title`, and `status`
  equal to the response's), unless the operation documents that status in another media type
  (a sign-in page refuses with a page; the token endpoint in RFC 6749's words), which the
  built-in `content_type_conformance` then holds it to.
- `no_token_no_entry`: a request sent without a token to an operation that is not declared
  public (its OpenAPI `security` names the bearer scheme) is answered 401.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
import schemathesis

if TYPE_CHECKING:
    from schemathesis import Case, CheckContext, Response

PROBLEM_JSON = "application/problem+json"
#: A path no route serves: where the edge's refusals are told apart from a route's.
NO_ROUTE = "/.dast/no-route"


def _operation(case: Case) -> dict[str, Any]:
    raw: dict[str, Any] = case.operation.definition.raw
    return raw


def _documented_media(case: Case, status: int) -> set[str]:
    response = _operation(case).get("responses", {}).get(str(status), {})
    return set(response.get("content") or {})


def _content_type(response: Response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0].split(";")[0].strip().lower()


@schemathesis.check
def refusals_are_problems(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    status = response.status_code
    if not 400 <= status < 500:
        return None
    media = _content_type(response)
    if media != PROBLEM_JSON and media in _documented_media(case, status):
        return None  # a page's refusal, an OAuth error: content_type_conformance holds it
    if media != PROBLEM_JSON:
        raise AssertionError(f"a {status} refusal is {media or 'untyped'}, not {PROBLEM_JSON}")
    body = _problem(response)
    if body is None:
        raise AssertionError(f"a {status} problem is not a JSON object")
    missing = [m for m in ("type", "title", "status") if m not in body]
    if missing:
        raise AssertionError(f"a {status} problem lacks {', '.join(missing)}")
    if not (isinstance(body["type"], str) and body["type"] and isinstance(body["title"], str)):
        raise AssertionError(f"a {status} problem's type and title must be non-empty strings")
    if body["status"] != status:
        raise AssertionError(f"a {status} problem says status {body['status']!r}")
    return True


@schemathesis.check
def no_token_no_entry(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if "authorization" in {name.lower() for name in response.request.headers}:
        return None
    if not _operation(case).get("security") or response.status_code == 401:
        return None  # declared public, or refused as it must be
    if _edge_refusal(response):
        return None
    raise AssertionError(
        f"answered {response.status_code} without a token; a route that is not declared "
        "public must answer 401 (or the edge refuse the request as it would on any path)"
    )


def _problem(response: Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _edge_refusal(response: Response) -> bool:
    """Whether the edge refused this request before any route saw it: the same request sent
    to a path no route serves is refused alike (the edge's body, query and header rules run
    before routing, the same on every path, so such a refusal teaches nothing about a route)."""
    if not 400 <= response.status_code < 500:
        return False
    sent = response.request
    url = urlsplit(str(sent.url))
    # The same path under a prefix no route serves: the path's own characters meet the
    # edge's path rules there too.
    probe = urlunsplit((url.scheme, url.netloc, NO_ROUTE + url.path, url.query, ""))
    again = requests.request(
        str(sent.method),
        probe,
        headers=dict(sent.headers),
        data=sent.body,
        timeout=10,
        allow_redirects=False,
    )
    first, second = _problem(response), _problem_of(again)
    return (
        again.status_code == response.status_code
        and first is not None
        and second is not None
        and first.get("type") == second.get("type")
    )


def _problem_of(answer: requests.Response) -> dict[str, Any] | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
