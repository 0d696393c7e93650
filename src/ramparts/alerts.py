"""Alerts: what an operator must look at now (a dead-lettered job, reconciliation drift, a
user throttled or locked out of the assistant for abuse).

An alert is raised three ways at once, so none depends on another: a Prometheus counter
(`ramparts_alerts_total{kind}`), a structured log line at error level, and, when
`RAMPARTS_ALERT_WEBHOOK_URL` is set, a JSON POST to it (`{"kind", "summary", "details",
"raised_at"}`; an alert manager or a chat hook). The webhook is best effort with a short
timeout: a receiver that is down is logged and never stops the work that raised the alert.
Details name ids and counts, never secrets, card data or personal data.

An alerter made `in_background` (the web app's) sends the POST while the request that raised
the alert goes on, so a slow receiver never holds a user's answer (or its database
connection); at most `MAX_PENDING` such POSTs are under way, any more is logged and not sent,
and `aclose` waits for those under way. A job or a command awaits its POST, as it must finish
before the process ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
import structlog
from prometheus_client import Counter

__all__ = ["ALERTS", "MAX_PENDING", "AlertKind", "Alerter"]

log = structlog.get_logger(__name__)

ALERTS = Counter("ramparts_alerts", "Alerts raised, by kind", ["kind"])
WEBHOOK_TIMEOUT = 5.0
#: POSTs under way at once from an alerter `in_background`: a flood of alerts is counted and
#: logged, but never holds more than this many sockets and tasks.
MAX_PENDING = 64


class AlertKind(StrEnum):
    DEAD_LETTER = "dead_letter"  # a job exhausted its retries
    RECONCILIATION_DRIFT = "reconciliation_drift"  # the ledger and the PSP disagree
    AI_ABUSE = "ai_abuse"  # a user's AI access throttled or locked for repeated abuse


class Alerter:
    """Raises alerts; `webhook_url`: where to POST them too (None: counter and log only);
    `in_background`: without waiting for the POST (see the module docstring)."""

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        timeout: float = WEBHOOK_TIMEOUT,
        in_background: bool = False,
    ):
        self._webhook_url = webhook_url
        self._timeout = timeout
        self._in_background = in_background
        self._pending: set[asyncio.Task[None]] = set()

    async def raise_alert(
        self, kind: AlertKind, summary: str, details: Mapping[str, Any] | None = None
    ) -> None:
        shown = dict(details or {})
        ALERTS.labels(kind=kind.value).inc()
        log.error("alert", kind=kind.value, summary=summary, **shown)
        if self._webhook_url is None:
            return
        body = {
            "kind": kind.value,
            "summary": summary,
            "details": shown,
            "raised_at": datetime.now(UTC).isoformat(),
        }
        if not self._in_background:
            await self._post(self._webhook_url, kind, body)
            return
        if len(self._pending) >= MAX_PENDING:
            log.warning("alert_webhook_backlog", kind=kind.value, pending=len(self._pending))
            return
        task = asyncio.create_task(self._post(self._webhook_url, kind, body))
        self._pending.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        """Wait for the POSTs under way (each within its timeout)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _post(self, url: str, kind: AlertKind, body: Mapping[str, Any]) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, json=body)
            if response.status_code >= 300:
                log.warning("alert_webhook_refused", kind=kind.value, status=response.status_code)
        except httpx.HTTPError as exc:
            log.warning("alert_webhook_unreachable", kind=kind.value, error=type(exc).__name__)
