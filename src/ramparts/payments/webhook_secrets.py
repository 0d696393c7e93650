"""The PSP's webhook signing secrets, kept in the KMS, rotated with an overlap window.

One KMS secret (`psp/stripe/webhook-secrets`) holds a JSON list, newest first, of
`{"secret", "expires_at"}`: the newest never expires; each earlier one stays valid until its
`expires_at` (unix seconds), so deliveries signed with it during a roll are still accepted.
Stripe rolls an endpoint's secret the same way (the old one kept for a chosen time), and it
makes the new one: `rotate` takes it, or makes a random one for a PSP that is given its
secret (the sandbox). Servers re-read the list at most every `REFRESH_SECONDS`, so a rotation
made by the CLI in another process is seen within that time, and an expired secret is
refused at once (expiry is checked on every read, not only on refresh).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass

from pydantic import SecretStr

from ramparts.crypto.kms import Kms, KmsError

__all__ = [
    "DEFAULT_OVERLAP_SECONDS",
    "MAX_OVERLAP_SECONDS",
    "REFRESH_SECONDS",
    "SECRET_NAME",
    "WebhookSecret",
    "WebhookSecrets",
]

SECRET_NAME = "psp/stripe/webhook-secrets"  # noqa: S105 - where they live, not what
#: Stripe's own default when an endpoint's secret is rolled: the old one works for 24 hours.
DEFAULT_OVERLAP_SECONDS = 24 * 3600
#: Stripe keeps a rolled secret for at most 7 days; longer would keep a leaked one alive.
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
REFRESH_SECONDS = 5.0
PREFIX = "whsec_"
MIN_SECRET_CHARS = 24


@dataclass(frozen=True)
class WebhookSecret:
    value: SecretStr
    expires_at: int | None  # None: the current secret

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def _check_secret(value: str) -> str:
    if not value.startswith(PREFIX) or len(value) < MIN_SECRET_CHARS or not value.isascii():
        raise ValueError(
            f"a webhook secret starts with {PREFIX!r} and has at least {MIN_SECRET_CHARS} "
            "ASCII characters"
        )
    if any(c.isspace() or c == "," for c in value):
        raise ValueError("a webhook secret holds no spaces or commas")
    return value


class WebhookSecrets:
    """Reads and rotates the list (see the module docstring)."""

    def __init__(self, kms: Kms, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._kms = kms
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[WebhookSecret]] | None = None

    def stored(self) -> list[WebhookSecret]:
        """Every stored secret, newest first, expired ones included (as the KMS holds them)."""
        raw = self._kms.read_secret(SECRET_NAME)
        if raw is None:
            return []
        try:
            items = json.loads(raw.get_secret_value())
            return [
                WebhookSecret(SecretStr(_check_secret(i["secret"])), i["expires_at"]) for i in items
            ]
        except (ValueError, KeyError, TypeError):
            # The message names no value: the document holds the secrets themselves.
            raise KmsError(
                f"the KMS secret {SECRET_NAME} is not a list of webhook secrets"
            ) from None

    def active(self, now: float | None = None) -> list[bytes]:
        """The secrets a delivery may be signed with now, newest first (the HMAC keys)."""
        now = time.time() if now is None else now
        with self._lock:
            cached = self._cached
            if cached is None or time.monotonic() - cached[0] >= self._refresh_seconds:
                cached = (time.monotonic(), self.stored())
                self._cached = cached
        return [s.value.get_secret_value().encode() for s in cached[1] if s.active(now)]

    def current(self) -> SecretStr | None:
        """The newest secret (the one to give a PSP that is told its secret), if any."""
        stored = self.stored()
        return stored[0].value if stored else None

    def rotate(
        self,
        new_secret: SecretStr | None = None,
        *,
        overlap_seconds: int = DEFAULT_OVERLAP_SECONDS,
        now: float | None = None,
    ) -> tuple[SecretStr, list[WebhookSecret]]:
        """Make `new_secret` (or a random one) the current secret; the previous current one
        stays valid for `overlap_seconds` (0: refused from now on). Expired ones are dropped,
        and one still inside an earlier window keeps its own, shorter, expiry. Returns the new
        secret and the stored list."""
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise ValueError(f"the overlap is between 0 and {MAX_OVERLAP_SECONDS} seconds")
        now = time.time() if now is None else now
        # `is None`, not `or`: an empty SecretStr is false, and must be refused, not replaced.
        fresh = SecretStr(PREFIX + secrets.token_urlsafe(32)) if new_secret is None else new_secret
        _check_secret(fresh.get_secret_value())
        kept: list[WebhookSecret] = []
        for old in self.stored():
            if old.value.get_secret_value() == fresh.get_secret_value():
                raise ValueError(
                    "that webhook secret is already stored; a rotation needs a new one"
                )
            expires = int(now) + overlap_seconds if old.expires_at is None else old.expires_at
            if overlap_seconds and expires > now:
                kept.append(WebhookSecret(old.value, min(expires, int(now) + overlap_seconds)))
        listed = [WebhookSecret(fresh, None), *kept]
        document = [
            {"secret": s.value.get_secret_value(), "expires_at": s.expires_at} for s in listed
        ]
        self._kms.write_secret(SECRET_NAME, SecretStr(json.dumps(document)))
        with self._lock:
            self._cached = None
        return fresh, listed

    def ensure(self) -> SecretStr:
        """The current secret, made first if none is stored (dev and the sandbox)."""
        current = self.current()
        if current is not None:
            return current
        fresh = SecretStr(PREFIX + secrets.token_urlsafe(32))
        document = json.dumps([{"secret": fresh.get_secret_value(), "expires_at": None}])
        # create_only: two processes ensuring at once end with one secret, the first one.
        self._kms.write_secret(SECRET_NAME, SecretStr(document), create_only=True)
        stored = self.current()
        if stored is None:
            raise KmsError(f"the KMS did not keep {SECRET_NAME}")
        return stored
