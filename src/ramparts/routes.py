"""Every HTTP route declares what it does for authorization, in one place a test can walk.

A route either names the policy action it is authorized as (a
`ramparts.policy.engine.PolicyAction`, by its qualified name; checked by Cedar in the
handler) or says why it needs none: `public` (anyone may call it: sign-in, discovery,
health), `self` (only the caller's own account, proven by its token), `page` or `scrape`
(below). The declaration rides in the route's OpenAPI operation as `x-ramparts-action`.

A route may also be for people only (`x-ramparts-people-only`) where its action is one the
Cedar schema lets services take elsewhere (the assistant calls a model for a person; a service
calls models through its own routes): the gate then refuses a service before reading its input,
as it does for every action whose `appliesTo` names no `Service`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "ACTION_KEY",
    "PEOPLE_ONLY_KEY",
    "SIGNED_BODY_RULES",
    "Exempt",
    "declares",
    "people_only",
]

ACTION_KEY = "x-ramparts-action"
PEOPLE_ONLY_KEY = "x-ramparts-people-only"
#: The ASGI scope key under which the edge leaves, for a route whose body is signed by its
#: sender (a PSP's webhook), the body rules it has not run yet: a callable raising the same
#: problem the edge would have. The route calls it once the signature is verified.
SIGNED_BODY_RULES = "ramparts.signed_body_rules"


class Exempt(StrEnum):
    PUBLIC = "public"
    SELF = "self"
    #: A page of the web app: its session cookie signs it in (`ramparts.web.page`), and it
    #: acts only through the API, where each call is authorized.
    PAGE = "page"
    #: The Prometheus scrape (`ramparts.web.metrics`): for the configured networks or the
    #: metrics token, which the route checks itself; no user token opens it.
    SCRAPE = "scrape"


def declares(action: object, *, people_only: bool = False) -> dict[str, Any]:
    """The `openapi_extra` of a route authorized as `action` (a policy action, whose `str` is
    its qualified name, or an `Exempt`), and refused to services when `people_only`."""
    declaration: dict[str, Any] = {ACTION_KEY: str(action)}
    if people_only:
        declaration[PEOPLE_ONLY_KEY] = True
    return declaration


def people_only(openapi_extra: dict[str, Any] | None) -> bool:
    """Whether a route's declaration refuses services (a `self` route is a person's own)."""
    extra = openapi_extra or {}
    return extra.get(ACTION_KEY) == Exempt.SELF or extra.get(PEOPLE_ONLY_KEY) is True
