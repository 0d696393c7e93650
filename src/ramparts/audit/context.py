"""The request being served, so an audit event names its client without every caller
passing the address and user agent along.

The web edge sets it once per request; code outside a request (the CLI, jobs) has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["ServedRequest", "current_request", "serving"]

MAX_USER_AGENT = 256


@dataclass(frozen=True)
class ServedRequest:
    ip: str | None
    user_agent: str | None


_current: ContextVar[ServedRequest | None] = ContextVar("ramparts_request", default=None)


def current_request() -> ServedRequest | None:
    return _current.get()


@contextmanager
def serving(ip: str | None, user_agent: str | None) -> Iterator[ServedRequest]:
    context = ServedRequest(ip=ip, user_agent=user_agent[:MAX_USER_AGENT] if user_agent else None)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
