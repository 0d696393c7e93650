"""Tool calls stored before they were masked are scrubbed.

Before this revision the model's tool-call turn (`ai_messages`, source `model:tool_calls`) and
an approval request's arguments were stored as the model wrote them, and an approval's result
as the tool returned it: personal data and credentials in clear. The gateway now stores them
masked; this revision brings the stored rows there too, and rescans every stored message with
today's detectors (which find more phrasings of a credential and more ways of writing personal
data than those 0012 ran). Each value found is replaced by its kind (`[PASSWORD]`, `[EMAIL]`),
JSON value by value so it stays JSON; no conversation token is made (the token map is sealed
under a tenant key a migration does not hold), and tokens already stored stay. A pending
request whose arguments lose a value shows and runs the scrubbed arguments: what is shown is
still what runs. Downgrading restores nothing: what was removed is gone, by design.

Revision ID: 0015_ai_masked_calls
Revises: 0014_ai_requester_and_switches
"""

import json
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

from ramparts.ai.masking import redacted

revision = "0015_ai_masked_calls"
down_revision = "0014_ai_requester_and_switches"
branch_labels = None
depends_on = None

BATCH = 500
FIRST = {"tenant": uuid.UUID(int=0), "id": uuid.UUID(int=0), "seq": 0}
MESSAGES = sa.text(
    "SELECT tenant_id, conversation_id, seq, content FROM ai_messages "
    "WHERE (tenant_id, conversation_id, seq) > (:tenant, :id, :seq) "
    "ORDER BY tenant_id, conversation_id, seq LIMIT :limit"
)
REWRITE_MESSAGE = sa.text(
    "UPDATE ai_messages SET content = :content "
    "WHERE tenant_id = :tenant AND conversation_id = :id AND seq = :seq"
)
APPROVALS = sa.text(
    "SELECT tenant_id, id, arguments::text, result::text FROM ai_approvals "
    "WHERE (tenant_id, id) > (:tenant, :id) ORDER BY tenant_id, id LIMIT :limit"
)
REWRITE_APPROVAL = sa.text(
    "UPDATE ai_approvals SET arguments = CAST(:arguments AS jsonb), "
    "result = CAST(:result AS jsonb) WHERE tenant_id = :tenant AND id = :id"
)


def scrubbed_json(content: str) -> str:
    """Stored text or JSON with every credential and personal value replaced by its kind."""
    try:
        value: Any = json.loads(content)
    except ValueError:
        return str(redacted(content))
    if not isinstance(value, dict | list):
        return str(redacted(content))
    clean = redacted(value)
    return content if clean == value else json.dumps(clean, ensure_ascii=False)


def upgrade() -> None:
    bind = op.get_bind()
    # The owner reads and rewrites every tenant's rows here, and only here: row-level security
    # is forced again before the transaction ends.
    op.execute("ALTER TABLE ai_messages NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE ai_approvals NO FORCE ROW LEVEL SECURITY")
    after = FIRST
    while rows := bind.execute(MESSAGES, {**after, "limit": BATCH}).all():
        changed = [
            {"tenant": t, "id": c, "seq": s, "content": new}
            for t, c, s, content in rows
            if (new := scrubbed_json(content)) != content
        ]
        if changed:
            bind.execute(REWRITE_MESSAGE, changed)
        after = {"tenant": rows[-1][0], "id": rows[-1][1], "seq": rows[-1][2]}
    after = {"tenant": FIRST["tenant"], "id": FIRST["id"]}
    while rows := bind.execute(APPROVALS, {**after, "limit": BATCH}).all():
        changed = []
        for tenant, approval, arguments, result in rows:
            clean = scrubbed_json(arguments)
            clean_result = scrubbed_json(result) if result is not None else None
            if clean != arguments or clean_result != result:
                changed.append(
                    {"tenant": tenant, "id": approval, "arguments": clean, "result": clean_result}
                )
        if changed:
            bind.execute(REWRITE_APPROVAL, changed)
        after = {"tenant": rows[-1][0], "id": rows[-1][1]}
    op.execute("ALTER TABLE ai_approvals FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE ai_messages FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    pass  # the scrubbed values are not kept anywhere, so there is nothing to put back
