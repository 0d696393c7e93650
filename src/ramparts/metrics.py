"""Prometheus metrics: the catalogue of what the runtime counts, and the exposition of it.

Every counter and histogram of the runtime is declared here, so `deploy/alerts.yml` and the
operations guide have one list to name (alerts raised elsewhere count in
`ramparts.alerts.ALERTS`). Labels take bounded values only: route templates, never raw paths;
status classes; policy action names.

`ramparts serve` with several worker processes runs prometheus_client in multiprocess mode:
`prepare_multiprocess` (called by `serve` before any worker starts) empties a directory under
RAMPARTS_HOME and points PROMETHEUS_MULTIPROC_DIR at it; each worker, a fresh interpreter,
then keeps its samples in files there, and `exposition` in whichever worker is scraped reads
every worker's. A single process keeps them in memory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "GATE_REFUSALS",
    "LATENCY",
    "MULTIPROCESS_ENV",
    "POLICY_DENIALS",
    "REQUESTS",
    "REQUEST_REFUSALS",
    "exposition",
    "prepare_multiprocess",
]

#: What prometheus_client reads, once, when it is imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The classic text format, which every Prometheus reads (2.x included); our names need
#: nothing newer.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

REQUESTS = Counter(
    "ramparts_http_requests",
    "HTTP requests answered, by method, route template and status class",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "ramparts_http_request_duration_seconds",
    "Time from a request's arrival to its last byte, by route template",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POLICY_DENIALS = Counter(
    "ramparts_policy_denials",
    "Cedar denials recorded, by policy action",
    ["action"],
)
GATE_REFUSALS = Counter(
    "ramparts_gate_refusals",
    "Requests the permission gate refused before their route ran, by reason",
    ["reason"],
)
REQUEST_REFUSALS = Counter(
    "ramparts_request_refusals",
    "Requests refused at the edge by a request rule (PLT-3), by rule",
    ["rule"],
)


def prepare_multiprocess(directory: Path) -> None:
    """Start this instance's multiprocess samples afresh in `directory` (a previous run's
    files would add its counts to ours) and have the worker processes started after this
    keep theirs there."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ[MULTIPROCESS_ENV] = str(directory)


def _multiprocess() -> bool:
    """Whether this process keeps its samples in the shared directory: only a process that
    imported prometheus_client with the variable set does."""
    return MULTIPROCESS_ENV in os.environ and values.ValueClass is not values.MutexValue


class _Families:
    """A collector over metric families computed for one scrape (the database's gauges)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _Default:
    """The process's own registry, as one collector of a scrape's registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(extra: Iterable[Metric] = ()) -> bytes:
    """The text format of every metric of this instance (every worker's, in multiprocess
    mode) and of `extra`, the families computed for this scrape."""
    registry = CollectorRegistry(auto_describe=False)
    collector: Collector
    if _multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        collector = _Default()
        registry.register(collector)
    collector = _Families(extra)
    registry.register(collector)
    return generate_latest(registry)
