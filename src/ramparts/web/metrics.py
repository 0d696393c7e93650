"""`GET /metrics`: the Prometheus exposition, for the scraper only.

A client gets it from one of the configured networks (`RAMPARTS_METRICS_NETWORKS`, CIDRs,
default loopback), judged by the connection's own peer address (the server trusts no
forwarded header), or with the metrics token (`RAMPARTS_METRICS_TOKEN`) as a bearer token,
compared in constant time. Anyone else gets the same 401 problem as any API route without a
valid token: the route is in the OpenAPI document, so hiding it behind a 404 would hide
nothing. The route is declared `scrape` (`ramparts.routes.Exempt`): the permission gate lets
it through to this check, and user tokens open nothing here.

Besides every worker's counters and histograms (`ramparts.metrics`), a scrape reports the
database's operational gauges (`ramparts.db.gauges`, cached): approvals pending, dead letters,
reconciliation drift, kill-switches, audit append lag. When the database cannot be read the
scrape still answers, with `ramparts_operations_gauges_up 0` and the failure logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterator, Sequence

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from ramparts.config import Settings
from ramparts.db.gauges import OperationsGauges, OperationsSnapshot
from ramparts.metrics import CONTENT_TYPE, exposition
from ramparts.problems import Problem, ProblemType
from ramparts.routes import Exempt, declares

__all__ = ["METRICS_PATH", "ScrapeAccess", "build_router", "gauge_families"]

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ScrapeAccess:
    """Who may read /metrics: a peer in `networks`, or a bearer of `token`."""

    def __init__(self, networks: Sequence[str], token: SecretStr | None) -> None:
        self._networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(n) for n in networks)
        self._token = (
            None if token is None else hashlib.sha256(token.get_secret_value().encode()).digest()
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ScrapeAccess:
        return cls(settings.metrics_networks, settings.metrics_token)

    def allows(self, peer: str | None, authorization: str | None) -> bool:
        if peer is not None and self._in_networks(peer):
            return True
        if self._token is None or authorization is None:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Digests of equal length: the comparison tells nothing, not even the token's length.
        digest = hashlib.sha256(presented.strip().encode()).digest()
        return hmac.compare_digest(digest, self._token)

    def _in_networks(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:  # a Unix socket's peer, or no address at all
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(address in network for network in self._networks)


def gauge_families(snapshot: OperationsSnapshot | None) -> Iterator[Metric]:
    """The database's gauges as metric families; `None`: the database could not be read."""
    up = GaugeMetricFamily(
        "ramparts_operations_gauges_up",
        "Whether this scrape could read the operational gauges from the database",
        value=0 if snapshot is None else 1,
    )
    yield up
    families = {
        "approvals_pending": GaugeMetricFamily(
            "ramparts_approvals_pending", "AI tool calls awaiting a decision, every tenant"
        ),
        "approval_oldest": GaugeMetricFamily(
            "ramparts_approval_oldest_pending_seconds",
            "Age of the oldest approval still awaiting a decision (0: none)",
        ),
        "dlq": GaugeMetricFamily("ramparts_dlq_depth", "Jobs in the dead-letter queue"),
        "drift": GaugeMetricFamily(
            "ramparts_reconciliation_drift",
            "Drift items found by the latest reconciliation run (no sample before the first)",
        ),
        "reconciled": GaugeMetricFamily(
            "ramparts_reconciliation_last_run_timestamp_seconds",
            "When the latest reconciliation run finished, Unix time",
        ),
        "killswitch": GaugeMetricFamily(
            "ramparts_killswitch_engaged",
            "Kill-switches engaged: the global one (0 or 1), tenants stopped, tools stopped",
            labels=["scope"],
        ),
        "audit_lag": GaugeMetricFamily(
            "ramparts_audit_append_lag_seconds",
            "Age of the oldest audit event not yet in its hash chain (0: none queued)",
        ),
    }
    if snapshot is not None:
        families["approvals_pending"].add_metric([], snapshot.approvals_pending)
        families["approval_oldest"].add_metric([], snapshot.approval_oldest_seconds or 0.0)
        families["dlq"].add_metric([], snapshot.dead_letters)
        if snapshot.reconciliation_drift is not None:
            families["drift"].add_metric([], snapshot.reconciliation_drift)
        if snapshot.reconciliation_finished is not None:
            families["reconciled"].add_metric([], snapshot.reconciliation_finished)
        switches = families["killswitch"]
        switches.add_metric(["global"], int(snapshot.killswitch_global))
        switches.add_metric(["tenant"], snapshot.killswitch_tenants)
        switches.add_metric(["tool"], snapshot.killswitch_tools)
        families["audit_lag"].add_metric([], snapshot.audit_lag_seconds)
    yield from families.values()


def build_router(access: ScrapeAccess, gauges: OperationsGauges) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        METRICS_PATH,
        openapi_extra=declares(Exempt.SCRAPE),
        response_class=Response,
        responses={
            200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}},
            401: {"description": "not from a configured network, and no metrics token"},
        },
    )
    async def metrics(request: Request) -> Response:
        """Every metric of this instance (all its workers) and the database's gauges."""
        peer = request.client.host if request.client else None
        if not access.allows(peer, request.headers.get("authorization")):
            raise Problem(
                401,
                ProblemType.UNAUTHENTICATED,
                "metrics are for the configured networks or the bearer of the metrics token",
                headers={"WWW-Authenticate": 'Bearer realm="ramparts-metrics"'},
            )
        snapshot: OperationsSnapshot | None
        try:
            snapshot = await gauges.snapshot()
        except (SQLAlchemyError, OSError):
            log.exception("operations_gauges_failed")
            snapshot = None
        return Response(exposition(gauge_families(snapshot)), media_type=CONTENT_TYPE)

    return router
