"""Rate limits, token budgets and abuse detection for the assistant (AI-3), through `limits`:
in memory by default, or in Redis (RAMPARTS_REDIS_URL) so every process shares the counts.

Per user and per tenant: requests per window and model tokens per day. Strikes (a refused tool
call, an injection sign, refused content) count per user: past `throttle_after` the user gets a
small request rate, past `lock_after` their AI access is locked for an hour; the strike that
throttles and the one that locks each raise an alert (`AlertKind.AI_ABUSE`, by the gateway).
Counts and locks are kept in the same storage, so a lock holds on every server.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import coredis
import limits
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

__all__ = ["AssistantLimits", "LimitExceededError", "Limiter", "Strike"]


class Strike(Enum):
    """What one strike did to its user."""

    COUNTED = "counted"
    THROTTLED = "throttled"  # this one slowed them down to `throttled_rate`
    LOCKED = "locked"  # this one locked their AI access for `lock_for`


class LimitExceededError(Exception):
    """`kind` is rate | budget | locked; `retry_after` in seconds."""

    def __init__(self, kind: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


@dataclass(frozen=True)
class AssistantLimits:
    user_rate: str = "30/minute"
    tenant_rate: str = "300/minute"
    user_tokens: str = "100000/day"
    tenant_tokens: str = "1000000/day"
    throttle_after: str = "5/10 minutes"  # strikes
    lock_after: str = "10/10 minutes"
    throttled_rate: str = "2/minute"
    lock_for: str = "1/hour"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            try:
                limits.parse(value)
            except ValueError:
                raise ValueError(f"{name}: {value!r} is not a rate such as '30/minute'") from None


class Limiter:
    def __init__(self, redis_url: str | None = None, policy: AssistantLimits | None = None) -> None:
        self._policy = policy or AssistantLimits()
        self._pool = coredis.ConnectionPool.from_url(redis_url) if redis_url else None
        storage = (
            # limits types its options as scalars, but passes a pool through to the client.
            storage_from_string("async+redis://", connection_pool=self._pool)  # type: ignore[arg-type]
            if self._pool is not None
            else storage_from_string("async+memory://")
        )
        self._window = MovingWindowRateLimiter(storage)
        parse = limits.parse
        policy = self._policy
        self._user_rate, self._tenant_rate = parse(policy.user_rate), parse(policy.tenant_rate)
        self._user_tokens = parse(policy.user_tokens)
        self._tenant_tokens = parse(policy.tenant_tokens)
        self._throttle, self._lock = parse(policy.throttle_after), parse(policy.lock_after)
        self._throttled, self._locked = parse(policy.throttled_rate), parse(policy.lock_for)

    @property
    def policy(self) -> AssistantLimits:
        return self._policy

    async def admit(self, tenant: str, user: str) -> None:
        """One more request by `user` of `tenant`, or LimitExceededError."""
        window = self._window
        if not await window.test(self._locked, "ai-lock", tenant, user):
            raise LimitExceededError("locked", "your AI access is locked for repeated abuse", 3600)
        throttled = not await window.test(self._throttle, "ai-strikes", tenant, user)
        if throttled and not await window.hit(self._throttled, "ai-throttled", tenant, user):
            raise LimitExceededError("rate", "slowed down after refused requests", 60)
        if not await window.hit(self._user_rate, "ai-user", tenant, user):
            raise LimitExceededError("rate", "too many assistant requests", 60)
        if not await window.hit(self._tenant_rate, "ai-tenant", tenant):
            raise LimitExceededError("rate", "too many assistant requests in your organisation", 60)
        for item, keys in ((self._user_tokens, (user,)), (self._tenant_tokens, ())):
            if not await window.test(item, "ai-tokens", tenant, *keys):
                raise LimitExceededError("budget", "the daily model budget is spent", 3600)

    async def spend(self, tenant: str, user: str, tokens: int) -> None:
        """Model tokens used (estimated); a budget past its end refuses the next request."""
        if tokens <= 0:
            return
        for item, keys in ((self._user_tokens, (user,)), (self._tenant_tokens, ())):
            cost = min(tokens, item.amount)
            if not await self._window.hit(item, "ai-tokens", tenant, *keys, cost=cost):
                # Spend what is left, so the next `admit` sees an empty budget.
                stats = await self._window.get_window_stats(item, "ai-tokens", tenant, *keys)
                if stats.remaining > 0:
                    await self._window.hit(item, "ai-tokens", tenant, *keys, cost=stats.remaining)

    async def strike(self, tenant: str, user: str) -> Strike:
        """Count a refused request or an injection sign; whether this one throttles or locks
        the user (each said by one strike only: the one that crosses its limit)."""
        window = self._window
        counted = await window.hit(self._throttle, "ai-strikes", tenant, user)
        if await window.hit(self._lock, "ai-lock-strikes", tenant, user):
            # A strike past the throttle's limit is not counted (its window is full), so only
            # the one that filled it finds the window full now.
            if counted and not await window.test(self._throttle, "ai-strikes", tenant, user):
                return Strike.THROTTLED
            return Strike.COUNTED
        # The lock is a window of one: only the first strike past the limit takes it.
        if await window.hit(self._locked, "ai-lock", tenant, user):
            return Strike.LOCKED
        return Strike.COUNTED

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()


def estimate_tokens(*texts: str) -> int:
    """About four characters a token, as the usual tokenizers average on English text."""
    return sum(len(text) for text in texts) // 4 + 1
