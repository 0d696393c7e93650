"""Abuse detection on the generation endpoint feeds the alerts (PLT-3): the strike that
throttles a user and the one that locks their AI access each raise one `ai_abuse` alert, to
the alert webhook (an alert manager on loopback) and the alerts counter, naming ids and limits
only: never what the user wrote. A locked user's further requests raise none."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

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
    assert [a["details"]["state"] for a in alerts.received] == ["throttled"]

    assert ask(server, headers, WORDS).status_code == 200
    for _ in range(3):  # locked now: refused before anything counts a strike
        refused = ask(server, headers, WORDS)
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:ramparts:problem:ai-locked"

    assert [a["kind"] for a in alerts.received] == ["ai_abuse", "ai_abuse"]
    throttled, locked = (a["details"] for a in alerts.received)
    ids = {"tenant_id": str(buyer.tenant_id), "user_id": str(buyer.user_id)}
    assert throttled == {**ids, "state": "throttled", "strikes": "2/10 minutes"}
    assert locked == {**ids, "state": "locked", "strikes": "4/10 minutes"}
    assert "zq9words" not in str(alerts.received)
    assert abuse_alerts_counted() == counted + 2
    assert len(recorded(urls, buyer.tenant_id, Action.AI_ACCESS_LOCKED)) == 1
