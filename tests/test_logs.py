"""The log pipeline: JSON lines with no secret or personal data, whatever code logs."""

from __future__ import annotations

import io
import json

import structlog

from ramparts.config import Profile, Settings
from ramparts.logs import REDACTED, log_renderer, redact_secrets

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
#: One of each kind of secret and personal data, as code might (wrongly) log it.
SECRETS = {
    "jwt": JWT,
    "bearer": "Bearer 8f14e45fceea167a5a36dedd4bea2543b2c1",  # pragma: allowlist secret
    "email": "alice.smith@example.com",
    "card": "4111 1111 1111 1111",
    "api_key": "sk_live_51H8xQ2eZvKYlo2C0aBcDeFgHiJkLmNoPq",  # pragma: allowlist secret
    "iban": "DE89 3704 0044 0532 0130 00",
    "password": "hunter2-correct-horse",  # pragma: allowlist secret
    "cookie": "rp_session=Zm9vYmFyYmF6cXV4cXV1eA",
    "otp": "492039",
    "code": "SplxlOBeZQQYbYS6WxSbIA",
}


def _logged(**fields: object) -> tuple[str, dict[str, object]]:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.format_exc_info,
            redact_secrets,
            log_renderer(Settings(profile=Profile.STAGE)),
        ],
    )
    logger.info("something_happened", **fields)
    line = out.getvalue()
    return line, json.loads(line)


def test_fields_named_like_secrets_are_redacted_whatever_they_hold() -> None:
    line, logged = _logged(
        password=SECRETS["password"],
        Authorization=SECRETS["bearer"],
        cookie=SECRETS["cookie"],
        otp=SECRETS["otp"],
        headers={"proxy-authorization": "Basic dXNlcjpwYXNz", "set-cookie": SECRETS["cookie"]},
        card_number=4111111111111111,
        client_secret="not-detectable-by-its-looks",
    )
    for name in ("password", "Authorization", "cookie", "otp", "card_number", "client_secret"):
        assert logged[name] == REDACTED
    assert logged["headers"] == {"proxy-authorization": REDACTED, "set-cookie": REDACTED}
    for value in (*SECRETS.values(), "dXNlcjpwYXNz", "not-detectable-by-its-looks"):
        assert value not in line


def test_values_that_look_like_secrets_are_redacted_where_they_appear() -> None:
    line, logged = _logged(
        note=f"token {SECRETS['jwt']} for {SECRETS['email']}",
        nested={"items": [{"payer": SECRETS["email"], "pan": SECRETS["card"]}]},
        iban=SECRETS["iban"],
        key=SECRETS["api_key"],
        header=SECRETS["bearer"],
        url=f"/oauth/callback?state=abc&code={SECRETS['code']}",
        number=4111111111111111,
        raw=SECRETS["email"].encode(),
    )
    for value in (*SECRETS.values(), "4111111111111111"):
        assert value not in line
    assert logged["note"] == "token [JWT] for [EMAIL]"
    assert logged["url"] == f"/oauth/callback?state=abc&code={REDACTED}"
    assert logged["nested"] == {"items": [{"payer": "[EMAIL]", "pan": "[CARD]"}]}
    assert logged["number"] == "[CARD]"


def test_a_traceback_is_rendered_without_locals_and_redacted() -> None:
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[structlog.processors.format_exc_info, redact_secrets, log_renderer(Settings())],
    )
    password = SECRETS["password"]  # a local the traceback must not show
    try:
        _sign_in(password)
    except ValueError:
        logger.exception("sign_in_failed")
    printed = out.getvalue()
    assert "ValueError: could not sign in [EMAIL] with [JWT]" in printed
    assert password not in printed
    assert SECRETS["email"] not in printed


def _sign_in(password: str) -> None:
    raise ValueError(f"could not sign in {SECRETS['email']} with {SECRETS['jwt']}")


def test_ordinary_values_pass_unchanged() -> None:
    _, logged = _logged(
        route="/api/quotes/{quote_id}", status=201, workers=2, ratio=0.5, ok=True, none=None
    )
    assert logged["route"] == "/api/quotes/{quote_id}"
    kept = (logged["status"], logged["workers"], logged["ratio"], logged["ok"])
    assert kept == (201, 2, 0.5, True)
    assert logged["none"] is None
