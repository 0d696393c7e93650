"""Alerts: what an operator must look at now (a dead-lettered job, reconciliation drift, a
user throttled or locked out of the assistant for abuse).

An alert is raised three ways at once, so none depends on another: a Prometheus counter
(`ramparts_alerts_total{kind}`), a structured log line at error level, and, when
`RAMPARTS_ALERT_WEBHOOK_URL` is set, a JSON POST to it (`{"kind", "summary", "details",
"raised_at"}`; an alert manager or a chat hook). The webhook is best effort with a short
timeout: a receiver that is down is logged and never stops the work that raised the alert.
Details name ids and counts, never secrets, card data or personal data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
import structlog
from prometheus_client import Counter

__all__ = ["ALERTS", "AlertKind", "Alerter"]

log = structlog.get_logger(__name__)

ALERTS = Counter("ramparts_alerts", "Alerts raised, by kind", ["kind"])
WEBHOOK_TIMEOUT = 5.0


class AlertKind(StrEnum):
    DEAD_LETTER = "dead_letter"  # a job exhausted its retries
    RECONCILIATION_DRIFT = "reconciliation_drift"  # the ledger and the PSP disagree
    AI_ABUSE = "ai_abuse"  # a user's AI access throttled or locked for repeated abuse


class Alerter:
    """Raises alerts; `webhook_url`: where to POST them too (None: counter and log only)."""

    def __init__(self, webhook_url: str | None = None, *, timeout: float = WEBHOOK_TIMEOUT):
        self._webhook_url = webhook_url
        self._timeout = timeout

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
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(self._webhook_url, json=body)
            if response.status_code >= 300:
                log.warning("alert_webhook_refused", kind=kind.value, status=response.status_code)
        except httpx.HTTPError as exc:
            log.warning("alert_webhook_unreachable", kind=kind.value, error=type(exc).__name__)
