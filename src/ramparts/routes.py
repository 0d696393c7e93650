"""Every HTTP route declares what it does for authorization, in one place a test can walk.

A route either names the policy action it is authorized as (`ramparts.policy.PolicyAction`,
checked by Cedar in the handler) or says why it needs none: `public` (anyone may call it:
sign-in, discovery, health) or `self` (only the caller's own account, proven by its token).
The declaration rides in the route's OpenAPI operation as `x-ramparts-action`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = ["ACTION_KEY", "Exempt", "declares"]

ACTION_KEY = "x-ramparts-action"


class Exempt(StrEnum):
    PUBLIC = "public"
    SELF = "self"


def declares(action: StrEnum) -> dict[str, Any]:
    """The `openapi_extra` of a route authorized as `action`."""
    return {ACTION_KEY: action.value}
