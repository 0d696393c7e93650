"""An app brings its own model adapter to `create_app` and reaches the gateway the routes use;
the gateway's checks (tools on offer, Cedar, region pinning) stand in front of that adapter
as of any other."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ramparts.ai.approvals import Approvals
from ramparts.ai.gateway import Gateway, ModelEndpoint
from ramparts.ai.models import Model, ModelTurn, ToolCall
from ramparts.audit.events import Action
from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes.roles import BUYER
from ramparts.web.app import create_app
from tests.ai.test_assistant import ask, sign_in
from tests.audit.trail import recorded


class PartnerModel:
    """An app's own adapter, speaking `Model`: it answers with its turns in order and keeps
    the names of the tools it was offered at each call."""

    name = "partner"

    def __init__(self, *turns: ModelTurn) -> None:
        self.turns = list(turns)
        self.offered: list[list[str]] = []

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        self.offered.append(sorted(tool["function"]["name"] for tool in tools))
        return self.turns.pop(0) if self.turns else ModelTurn("")


def lists_then_drafts() -> PartnerModel:
    """Lists the user's quotes and asks for a seller's tool, then answers."""
    return PartnerModel(
        ModelTurn(
            None,
            (
                ToolCall("list_quotes", {}),
                ToolCall("draft_proposal", {"quote_id": str(uuid.uuid4())}),
            ),
        ),
        ModelTurn("Here are your quotes."),
    )


def test_an_apps_own_adapter_answers_the_assistant_through_the_gateway_on_app_state(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adapter: Model = lists_then_drafts()
    assert isinstance(adapter, PartnerModel)
    used: list[str] = []

    def spy_on_the_assistant(app: FastAPI) -> None:
        assert isinstance(app.state.gateway, Gateway)
        assert isinstance(app.state.approvals, Approvals)
        for service, method in ((app.state.gateway, "converse"), (app.state.approvals, "pending")):
            original = getattr(service, method)

            async def spy(*args: Any, _original: Any = original, _name: str = method) -> Any:
                used.append(_name)
                return await _original(*args)

            monkeypatch.setattr(service, method, spy)

    # The adapter's endpoint is in the region RAMPARTS_MODEL_REGION says: the tenants here
    # are in the EU.
    server = serve_app(spy_on_the_assistant, adapter=adapter, model_region="eu")
    buyer, headers = sign_in(server, urls, kms, BUYER)
    answer = ask(server, headers, "What do I have?")
    assert answer.status_code == 200, answer.text
    assert answer.json()["reply"] == "Here are your quotes."
    assert [(a["tool"], a["status"], a["reason"]) for a in answer.json()["actions"]] == [
        ("list_quotes", "executed", "done"),
        ("draft_proposal", "refused", "not available to you"),  # a seller's tool
    ]
    # It was offered only the buyer's tools, and asked again with the results.
    assert adapter.offered == [["create_quote", "get_quote", "list_quotes"]] * 2
    assert server.get("/api/approvals", headers=headers).status_code == 200
    assert used == ["converse", "pending"]  # the routes use the services on app.state
    [answered] = recorded(urls, buyer.tenant_id, Action.ASSISTANT_ANSWERED)
    assert answered["details"]["model"] == "partner"
    assert answered["details"]["endpoint"] == "custom-eu"


def test_region_pinning_stands_in_front_of_an_apps_own_adapter(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    adapter = lists_then_drafts()
    server = serve_app(adapter=adapter)  # RAMPARTS_MODEL_REGION: us (the default)
    buyer, headers = sign_in(server, urls, kms, BUYER)
    answer = ask(server, headers, "What do I have?")
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"] == "urn:ramparts:problem:no-model-endpoint"
    assert adapter.offered == []  # EU data never reached it
    assert recorded(urls, buyer.tenant_id, Action.ASSISTANT_ANSWERED) == []


def test_the_kill_switch_stands_in_front_of_an_apps_own_adapter(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    adapter = lists_then_drafts()
    server = serve_app(adapter=adapter, model_region="eu")
    admin, admin_headers = sign_in(server, urls, kms, ADMIN_ROLE)
    _, headers = sign_in(server, urls, kms, BUYER, admin.tenant)
    engaged = server.post(
        "/api/assistant/killswitch",
        json={"engaged": True, "reason": "drill"},
        headers=admin_headers,
    )
    assert engaged.status_code == 200, engaged.text
    answer = ask(server, headers, "What do I have?")
    assert answer.status_code == 503, answer.text
    assert answer.json()["type"] == "urn:ramparts:problem:ai-disabled"
    assert adapter.offered == []


def test_an_app_names_its_own_endpoints_and_their_regions(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    us, eu = lists_then_drafts(), PartnerModel(ModelTurn("From the EU."))
    server = serve_app(
        endpoints=[ModelEndpoint("partner-us", "us", us), ModelEndpoint("partner-eu", "eu", eu)]
    )
    buyer, headers = sign_in(server, urls, kms, BUYER)
    answer = ask(server, headers, "What do I have?")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["reply"], answer.json()["actions"]) == ("From the EU.", [])
    assert us.offered == []  # an EU tenant reaches only the EU endpoint
    assert len(eu.offered) == 1
    [answered] = recorded(urls, buyer.tenant_id, Action.ASSISTANT_ANSWERED)
    assert answered["details"]["endpoint"] == "partner-eu"


def test_an_app_brings_a_model_or_endpoints_not_both(urls: DatabaseUrls, kms: Kms) -> None:
    adapter = lists_then_drafts()
    settings = Settings(home="/nonexistent", secret_key="x" * 43)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="model= or endpoints=, not both"):
        create_app(
            settings,
            Database(urls.app, pool_size=1),
            kms,
            model=adapter,
            endpoints=[ModelEndpoint("partner-eu", "eu", adapter)],
        )
