"""RFC 9457 problem details: the only shape an error leaves the server in.

Each kind of error is one `ProblemType`: a stable `type` URI (`urn:ramparts:problem:<slug>`)
that clients and tests match on, and a `title` fixed per type; `detail` says what was wrong with
this request. README.md's "Errors over HTTP" lists the same types (tests/test_problems.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["PROBLEM_JSON", "Problem", "ProblemType", "problem_response"]

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ramparts:problem:"


class ProblemType(Enum):
    """Every kind of error the server answers with, as (slug, title).

    The status is chosen per answer: one type may be answered with several (a refused passkey
    is a 400 or a 401).
    """

    NOT_FOUND = ("not-found", "Not found")
    METHOD_NOT_ALLOWED = ("method-not-allowed", "Method Not Allowed")
    BAD_REQUEST = ("bad-request", "Bad request")
    MALFORMED_JSON = ("malformed-json", "Malformed JSON")
    MALFORMED_BODY = ("malformed-body", "Malformed body")
    UNAUTHENTICATED = ("unauthenticated", "Authentication required")
    FORBIDDEN = ("forbidden", "Forbidden")
    NOT_A_USER = ("not-a-user", "Forbidden")
    REAUTHENTICATION_REQUIRED = ("reauthentication-required", "Sign in again")
    PASSKEY_REFUSED = ("passkey-refused", "Passkey refused")
    WRONG_STATUS = ("wrong-status", "Conflict")
    LOGIN_EXPIRED = ("login-expired", "Sign-in expired")
    SECOND_FACTOR_LOCKED = ("second-factor-locked", "Second factor locked")
    AI_DISABLED = ("ai-disabled", "Unavailable")
    AI_LOCKED = ("ai-locked", "Forbidden")
    CONTENT_REFUSED = ("content-refused", "Unprocessable request")
    CONVERSATION_TOO_LONG = ("conversation-too-long", "Unprocessable request")
    NO_MODEL_ENDPOINT = ("no-model-endpoint", "Unavailable")
    NO_MODEL_KEY = ("no-model-key", "Unavailable")
    RATE_LIMITED = ("rate-limited", "Too many requests")
    BUDGET_EXHAUSTED = ("budget-exhausted", "Too many requests")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", "Unsupported media type")
    BODY_TOO_LARGE = ("body-too-large", "Request body too large")
    # Request rules (PLT-3, `ramparts.web.rules`): one type per rule past its limit.
    JSON_TOO_DEEP = ("json-too-deep", "JSON nested too deep")
    JSON_TOO_MANY_KEYS = ("json-too-many-keys", "JSON object too wide")
    JSON_STRING_TOO_LONG = ("json-string-too-long", "JSON string too long")
    JSON_ARRAY_TOO_LONG = ("json-array-too-long", "JSON array too long")
    TOO_MANY_HEADERS = ("too-many-headers", "Too many headers")
    HEADERS_TOO_LARGE = ("headers-too-large", "Headers too large")
    URL_TOO_LONG = ("url-too-long", "URL too long")
    CONTROL_CHARACTER = ("control-character", "Control character refused")
    INVALID_REQUEST = ("invalid-request", "Invalid request")
    CORS_REJECTED = ("cors-rejected", "CORS preflight rejected")
    NOT_READY = ("not-ready", "Service not ready")
    INTERNAL_ERROR = ("internal-error", "Internal server error")
    UNKNOWN_HOST = ("unknown-host", "Unknown host")
    SIGNATURE_REFUSED = ("signature-refused", "Webhook signature refused")
    NOT_AN_EVENT = ("not-an-event", "Not a PSP event")
    # Payments: no card number ever reaches the server (PAY-1); money-moving requests are
    # idempotent (PAY-3).
    CARD_NUMBER_REFUSED = ("card-number-refused", "Card number refused")
    IDEMPOTENCY_KEY_REQUIRED = ("idempotency-key-required", "Idempotency-Key required")
    IDEMPOTENCY_KEY_REUSED = ("idempotency-key-reused", "Idempotency-Key reused")
    IDEMPOTENCY_KEY_IN_FLIGHT = ("idempotency-key-in-flight", "Request in progress")
    PAYMENTS_UNAVAILABLE = ("payments-unavailable", "Payments unavailable")
    TOOL_OUTCOME_UNKNOWN = ("tool-outcome-unknown", "Outcome unknown")
    PAYMENT_NOT_PAID = ("payment-not-paid", "Conflict")
    # Paying (PAY-2): too many attempts for a card or a payer, a card the PSP declined, and a
    # second live payment for what is paid already.
    VELOCITY_LIMIT = ("velocity-limit", "Too many payment attempts")
    CARD_DECLINED = ("card-declined", "Card declined")
    PAYMENT_EXISTS = ("payment-exists", "Payment exists")
    # Any other status the framework answers with; titled, like RFC 9457's about:blank, with
    # the status's own phrase.
    HTTP_ERROR = ("http-error", None)

    def __init__(self, slug: str, title: str | None) -> None:
        self.slug = slug
        self._title = title

    @property
    def uri(self) -> str:
        """The `type` member of the answer."""
        return TYPE_PREFIX + self.slug

    def title(self, status: int) -> str:
        """The `title` member of an answer with `status`: the type's own, whatever the status,
        but for `HTTP_ERROR`."""
        return self._title or HTTPStatus(status).phrase


class Problem(Exception):  # noqa: N818 - named for RFC 9457 "problem details"
    """Raise anywhere in a request to answer with problem+json."""

    def __init__(
        self,
        status: int,
        problem_type: ProblemType,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or problem_type.title(status))
        self.status = status
        self.type = problem_type
        self.detail = detail
        self.headers = headers
        self.extensions = extensions

    def response(self) -> JSONResponse:
        return problem_response(
            self.status, self.type, self.detail, headers=self.headers, **self.extensions
        )


def problem_response(
    status: int,
    problem_type: ProblemType,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem_type.uri,
        "title": problem_type.title(status),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)
