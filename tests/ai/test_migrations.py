"""Conversations stored before the DLP fixes are scrubbed by the upgrade (0012), and tool
calls and approvals stored before they were masked (0015)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import psycopg
import pytest
from alembic import command

from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.db.migrate import _config, ensure_app_role

BEFORE = "0011_second_factor"
SCRUBBING = "0012_ai_hardening"
OLD_PASSWORD = "Winter2026!xyz"  # pragma: allowlist secret


def test_stored_credentials_and_missed_personal_data_are_scrubbed(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database(migrate=False)
    ensure_app_role(urls)
    command.upgrade(_config(urls.owner), BEFORE)
    tenant, user, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    result = {
        "title": "Login",
        "description": f'Portal password: "{OLD_PASSWORD}", mail jürgen@müller.de',
    }
    stored = [
        ("user", "my password: Hunter2Hunter2 and my SSN 078 05 1120"),  # pragma: allowlist secret
        ("tool", json.dumps(result, ensure_ascii=False)),
        ("assistant", "Sent to [EMAIL_1] for quote 7f3a9c1e-0000-4000-8000-000000000001."),
    ]
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Old', 'eu')",
            (tenant, f"old-{tenant.hex[:8]}"),
        )
        conn.execute(
            "INSERT INTO users (id, tenant_id, username, display_name) "
            "VALUES (%s, %s, 'old@example.test', 'Old')",
            (user, tenant),
        )
        conn.execute(
            "INSERT INTO ai_conversations (tenant_id, id, user_id) VALUES (%s, %s, %s)",
            (tenant, conversation, user),
        )
        for seq, (role, content) in enumerate(stored, 1):
            conn.execute(
                "INSERT INTO ai_messages (tenant_id, conversation_id, seq, role, trust, source, "
                "content) VALUES (%s, %s, %s, %s, 'trusted', 'user', %s)",
                (tenant, conversation, seq, role, content),
            )

    command.upgrade(_config(urls.owner), SCRUBBING)

    with psycopg.connect(libpq(urls.owner)) as conn:
        rows = conn.execute(
            "SELECT content FROM ai_messages WHERE tenant_id = %s ORDER BY seq", (tenant,)
        ).fetchall()
        forced = conn.execute(
            "SELECT relforcerowsecurity FROM pg_class WHERE relname = 'ai_messages'"
        ).fetchone()
    assert [content for (content,) in rows] == [
        "my password: [PASSWORD] and my SSN [SSN]",
        # Still JSON: scrubbed value by value, the quoted password's quotes and all.
        json.dumps(
            {"title": "Login", "description": "Portal password: [PASSWORD], mail [EMAIL]"},
            ensure_ascii=False,
        ),
        stored[2][1],  # tokens and ids are not personal data: left as they were
    ]
    assert forced == (True,)


def test_stored_tool_calls_and_approvals_are_scrubbed(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database(migrate=False)
    ensure_app_role(urls)
    command.upgrade(_config(urls.owner), "0014_ai_requester_and_switches")
    tenant, user, conversation, approval = (uuid.uuid4() for _ in range(4))
    arguments = {
        "title": "Desks",
        "description": f"Ship to bob@example.com, call +41446681800, password {OLD_PASSWORD}",
    }
    calls = [{"id": "call_1", "name": "create_quote", "arguments": arguments}]
    result = {"id": str(approval), "description": arguments["description"]}
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Old', 'eu')",
            (tenant, f"old-{tenant.hex[:8]}"),
        )
        conn.execute(
            "INSERT INTO users (id, tenant_id, username, display_name) "
            "VALUES (%s, %s, 'old@example.test', 'Old')",
            (user, tenant),
        )
        conn.execute(
            "INSERT INTO ai_conversations (tenant_id, id, user_id) VALUES (%s, %s, %s)",
            (tenant, conversation, user),
        )
        conn.execute(
            "INSERT INTO ai_messages (tenant_id, conversation_id, seq, role, trust, source, "
            "content) VALUES (%s, %s, 1, 'assistant', 'untrusted', 'model:tool_calls', %s)",
            (tenant, conversation, json.dumps(calls)),
        )
        conn.execute(
            "INSERT INTO ai_approvals (tenant_id, id, conversation_id, tool, arguments, reason, "
            "provenance, requested_by, status, expires_at, result) VALUES (%s, %s, %s, "
            "'create_quote', %s, 'why', '[]', %s, 'executed', now(), %s)",
            (tenant, approval, conversation, json.dumps(arguments), user, json.dumps(result)),
        )

    command.upgrade(_config(urls.owner), "0015_ai_masked_calls")

    clean = "Ship to [EMAIL], call [PHONE], password [PASSWORD]"
    with psycopg.connect(libpq(urls.owner)) as conn:
        [(content,)] = conn.execute(
            "SELECT content FROM ai_messages WHERE tenant_id = %s", (tenant,)
        ).fetchall()
        [(stored_arguments, stored_result)] = conn.execute(
            "SELECT arguments, result FROM ai_approvals WHERE tenant_id = %s", (tenant,)
        ).fetchall()
        forced = conn.execute(
            "SELECT relname, relforcerowsecurity FROM pg_class "
            "WHERE relname IN ('ai_messages', 'ai_approvals') ORDER BY relname"
        ).fetchall()
    assert json.loads(content) == [{**calls[0], "arguments": {**arguments, "description": clean}}]
    assert stored_arguments == {**arguments, "description": clean}
    assert stored_result == {**result, "description": clean}
    assert forced == [("ai_approvals", True), ("ai_messages", True)]


def test_requests_made_before_0025_are_the_assistants_and_origin_matches_conversation(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    """0025: every stored request is the assistant's (in its conversation); a person's own
    request (`api`) has no conversation, and the database refuses either one mixed up."""
    urls = make_database(migrate=False)
    ensure_app_role(urls)
    command.upgrade(_config(urls.owner), "0023_payment_records")
    tenant, user, conversation, old = (uuid.uuid4() for _ in range(4))
    insert = (
        "INSERT INTO ai_approvals (tenant_id, id, conversation_id, tool, arguments, reason, "
        "provenance, requested_by, expires_at{origin}) VALUES (%s, %s, %s, 'issue_refund', "
        "'{{}}', 'why', '[]', %s, now(){value})"
    )
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Old', 'eu')",
            (tenant, f"old-{tenant.hex[:8]}"),
        )
        conn.execute(
            "INSERT INTO users (id, tenant_id, username, display_name) "
            "VALUES (%s, %s, 'old@example.test', 'Old')",
            (user, tenant),
        )
        conn.execute(
            "INSERT INTO ai_conversations (tenant_id, id, user_id) VALUES (%s, %s, %s)",
            (tenant, conversation, user),
        )
        conn.execute(insert.format(origin="", value=""), (tenant, old, conversation, user))

    command.upgrade(_config(urls.owner), "0025_direct_approvals")

    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        assert conn.execute("SELECT origin FROM ai_approvals WHERE id = %s", (old,)).fetchall() == [
            ("assistant",)
        ]
        direct = insert.format(origin=", origin", value=", %s")
        conn.execute(direct, (tenant, uuid.uuid4(), None, user, "api"))
        for conversation_id, origin in ((conversation, "api"), (None, "assistant")):
            with pytest.raises(psycopg.errors.CheckViolation, match="ck_ai_approvals_conversation"):
                conn.execute(direct, (tenant, uuid.uuid4(), conversation_id, user, origin))
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_ai_approvals_origin"):
            conn.execute(direct, (tenant, uuid.uuid4(), None, user, "email"))
        count = conn.execute("SELECT count(*) FROM ai_approvals WHERE tenant_id = %s", (tenant,))
        assert count.fetchall() == [(2,)]
