"""A tenant admin's kill-switch over HTTP: the answer is the effective state and who holds it,
not an echo of what was asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import sign_in
from tests.test_cli import owner_env, run


def test_the_admin_is_told_the_effective_kill_switch_state_and_who_holds_it(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    server = serve_app()
    admin, headers = sign_in(server, urls, kms, ADMIN_ROLE)
    _, buyer = sign_in(server, urls, kms, BUYER, tenant=admin.tenant)

    def switch(engaged: bool, tool: str = "") -> dict[str, object]:
        answer = server.post(
            "/api/assistant/killswitch", json={"engaged": engaged, "tool": tool}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body

    def state() -> dict[str, object]:
        answer = server.get("/api/assistant/killswitch", headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body

    assert server.get("/api/assistant/killswitch", headers=buyer).status_code == 403
    assert state() == {"tool": None, "engaged": False, "held_by": [], "tools": []}
    assert switch(True) == {"tool": None, "engaged": True, "held_by": ["tenant"], "requested": True}
    env = owner_env(tmp_path, urls)
    assert run("killswitch", "on", "--tenant", admin.tenant, env=env).returncode == 0
    # Lifting their own switch does not restart what the operator keeps off: they are told so.
    assert switch(False) == {
        "tool": None,
        "engaged": True,
        "held_by": ["operator"],
        "requested": False,
    }
    # A tool is off when the whole assistant is, whoever switched it.
    assert switch(False, "get_quote") == {
        "tool": "get_quote",
        "engaged": True,
        "held_by": ["operator"],
        "requested": False,
    }
    assert run("killswitch", "off", "--tenant", admin.tenant, env=env).returncode == 0
    on = run("killswitch", "on", "--tenant", admin.tenant, "--tool", "list_quotes", env=env)
    assert on.returncode == 0, on.stderr
    assert switch(True, "list_quotes") == {
        "tool": "list_quotes",
        "engaged": True,
        "held_by": ["operator", "tenant"],
        "requested": True,
    }
    assert state() == {
        "tool": None,
        "engaged": False,
        "held_by": [],
        "tools": [{"tool": "list_quotes", "engaged": True, "held_by": ["operator", "tenant"]}],
    }
    assert switch(False, "list_quotes")["held_by"] == ["operator"]
    off = run("killswitch", "off", "--tenant", admin.tenant, "--tool", "list_quotes", env=env)
    assert off.returncode == 0, off.stderr
    assert switch(False, "list_quotes") == {
        "tool": "list_quotes",
        "engaged": False,
        "held_by": [],
        "requested": False,
    }
    # Another tenant's switches are not this tenant's to see.
    other, other_headers = sign_in(server, urls, kms, ADMIN_ROLE)
    assert run("killswitch", "on", "--tenant", other.tenant, env=env).returncode == 0
    assert state()["engaged"] is False
    other_state = server.get("/api/assistant/killswitch", headers=other_headers).json()
    assert other_state["held_by"] == ["operator"]
    assert run("killswitch", "off", "--tenant", other.tenant, env=env).returncode == 0
