"""Abuse detection on the generation endpoint feeds the alerts (PLT-3): the strike that
throttles a user and the one that locks their AI access each raise one `ai_abuse` alert, to
the alert webhook (an alert manager on loopback) and the alerts counter, naming ids and limits
only: never what the user wrote. A locked user's further requests raise none."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from ramparts.alerts import MAX_PENDING, Alerter, AlertKind
from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import ask, script, sign_in
from tests.audit.trail import recorded
from tests.payments.flows import AlertReceiver

PROBE = {"name": "issue_refund", "arguments": {"amount_minor": 1}}
#: In every message: an alert that carried the user's words would show it.
WORDS = "please refund me, my reference is zq9words"


@pytest.fixture
def alerts() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    yield receiver
    receiver.close()


def abuse_alerts_counted() -> float:
    return REGISTRY.get_sample_value("ramparts_alerts_total", {"kind": "ai_abuse"}) or 0.0


def arrived(receiver: AlertReceiver, count: int) -> list[dict[str, Any]]:
    """What `receiver` got, once it holds `count` alerts or 5 s passed: the web app sends
    them beside the answer, not before it."""
    deadline = time.monotonic() + 5
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return receiver.received


def test_throttling_and_locking_a_user_each_raise_one_alert(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path: Path,
    alerts: AlertReceiver,
) -> None:
    # One model call per message; strikes: 1, then 2 (throttled: its limit is 2), then 3 to 5
    # (the fifth is past the lock's limit of 4).
    model = script(
        tmp_path,
        {"tool_calls": [PROBE]},
        {"tool_calls": [PROBE]},
        {"tool_calls": [PROBE] * 3},
    )
    server = serve_app(
        model=model,
        ai_max_steps=1,
        ai_throttle_after="2/10 minutes",
        ai_lock_after="4/10 minutes",
        alert_webhook_url=alerts.url,
    )
    buyer, headers = sign_in(server, urls, kms, BUYER)
    counted = abuse_alerts_counted()

    assert ask(server, headers, WORDS).status_code == 200
    assert alerts.received == []  # one strike: nothing to say yet

    assert ask(server, headers, WORDS).status_code == 200
    assert [a["details"]["state"] for a in arrived(alerts, 1)] == ["throttled"]

    assert ask(server, headers, WORDS).status_code == 200
    for _ in range(3):  # locked now: refused before anything counts a strike
        refused = ask(server, headers, WORDS)
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:ramparts:problem:ai-locked"

    assert [a["kind"] for a in arrived(alerts, 2)] == ["ai_abuse", "ai_abuse"]
    throttled, locked = (a["details"] for a in alerts.received)
    ids = {"tenant_id": str(buyer.tenant_id), "user_id": str(buyer.user_id)}
    assert throttled == {**ids, "state": "throttled", "strikes": "2/10 minutes"}
    assert locked == {**ids, "state": "locked", "strikes": "4/10 minutes"}
    assert "zq9words" not in str(alerts.received)
    assert abuse_alerts_counted() == counted + 2
    assert len(recorded(urls, buyer.tenant_id, Action.AI_ACCESS_LOCKED)) == 1


class HeldAlertReceiver(AlertReceiver):
    """An alert manager that answers only once released (at most `HOLD` seconds later)."""

    HOLD = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.release = threading.Event()
        handler = self.server.RequestHandlerClass
        held = self

        class Holding(handler):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                held.release.wait(held.HOLD)
                super().do_POST()

        self.server.RequestHandlerClass = Holding
        self.server.socket.listen(128)  # many POSTs may arrive at once


def test_a_slow_alert_manager_never_holds_the_request_that_raised_the_alert(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    """The alert goes out while the user's answer does: the strike that throttles them is
    answered at once, whatever the alert manager takes (up to the webhook's timeout), and the
    alert still arrives."""
    receiver = HeldAlertReceiver()
    try:
        model = script(tmp_path, {"tool_calls": [PROBE, PROBE]})
        server = serve_app(
            model=model,
            ai_max_steps=1,
            ai_throttle_after="2/10 minutes",
            ai_lock_after="4/10 minutes",
            alert_webhook_url=receiver.url,
        )
        _, headers = sign_in(server, urls, kms, BUYER)
        started = time.monotonic()
        assert ask(server, headers, WORDS).status_code == 200  # two strikes: throttled
        elapsed = time.monotonic() - started
        assert receiver.received == []  # still held
        assert elapsed < receiver.HOLD / 2, f"{elapsed:.1f} s"
        receiver.release.set()
        assert [a["details"]["state"] for a in arrived(receiver, 1)] == ["throttled"]
    finally:
        receiver.release.set()
        receiver.close()


def test_alerts_sent_in_background_are_bounded_and_waited_for() -> None:
    """A flood of alerts is each counted, but holds at most `MAX_PENDING` POSTs (sockets,
    tasks) at once, the rest only logged; `aclose` waits for those under way."""
    receiver = HeldAlertReceiver()
    alerter = Alerter(receiver.url, in_background=True)
    counted = abuse_alerts_counted()

    async def flood() -> None:
        for n in range(MAX_PENDING + 10):
            await alerter.raise_alert(AlertKind.AI_ABUSE, "a flood", {"n": n})
        receiver.release.set()
        await alerter.aclose()

    try:
        asyncio.run(flood())
    finally:
        receiver.release.set()
        receiver.close()
    assert abuse_alerts_counted() == counted + MAX_PENDING + 10
    assert sorted(a["details"]["n"] for a in receiver.received) == list(range(MAX_PENDING))
