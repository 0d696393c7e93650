"""AI gateway hardening: conversations stored before the DLP fixes are scrubbed.

Before this revision the gateway sent announced credentials (`db_password=…`, `my password:
…`) and personal data written in forms the detectors missed (`jürgen@müller.de`, `078 05 1120`,
`de89 3704 …`) to the model, and stored them in clear in `ai_messages.content`. The gateway now
stores only what the model may see; this revision brings the stored rows there too: every
message is scanned with today's detectors and each credential or personal value found is
replaced by its kind (`[PASSWORD]`, `[EMAIL]`). No conversation token is made, as the
conversation's token map is sealed under a tenant key that a migration does not hold; tokens
already stored (`[EMAIL_1]`) are not findings and stay. Downgrading restores nothing: what was
removed is gone, by design.

Revision ID: 0012_ai_hardening
Revises: 0011_second_factor
"""

import json
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

from ramparts.crypto.scanner import find_secrets
from ramparts.detectors import find_sensitive

revision = "0012_ai_hardening"
down_revision = "0011_second_factor"
branch_labels = None
depends_on = None

BATCH = 500
PAGE = sa.text(
    "SELECT tenant_id, conversation_id, seq, content FROM ai_messages "
    "WHERE (tenant_id, conversation_id, seq) > (:tenant, :conversation, :seq) "
    "ORDER BY tenant_id, conversation_id, seq LIMIT :limit"
)
REWRITE = sa.text(
    "UPDATE ai_messages SET content = :content "
    "WHERE tenant_id = :tenant AND conversation_id = :conversation AND seq = :seq"
)
FIRST = {"tenant": uuid.UUID(int=0), "conversation": uuid.UUID(int=0), "seq": 0}


def scrubbed_message(content: str) -> str:
    """A stored message scrubbed; a tool result (JSON) value by value, so it stays JSON."""
    try:
        value = json.loads(content)
    except ValueError:
        return scrubbed(content)
    if not isinstance(value, dict | list):
        return scrubbed(content)
    clean = _scrubbed_value(value)
    return content if clean == value else json.dumps(clean, ensure_ascii=False)


def _scrubbed_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrubbed(value)
    if isinstance(value, dict):
        return {k: _scrubbed_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed_value(v) for v in value]
    return value


def scrubbed(content: str) -> str:
    """`content` with every credential and personal value replaced by its kind."""
    sensitive = find_sensitive(content)
    findings = sensitive + [
        f
        for f in find_secrets(content, sensitive)
        if not any(f.start < s.end and s.start < f.end for s in sensitive)
    ]
    parts, last = [], 0
    for finding in sorted(findings, key=lambda f: f.start):
        parts += [content[last : finding.start], f"[{finding.kind.value}]"]
        last = finding.end
    parts.append(content[last:])
    return "".join(parts)


def upgrade() -> None:
    bind = op.get_bind()
    # The owner reads and rewrites every tenant's rows here, and only here: the table's
    # row-level security is forced again before the transaction ends.
    op.execute("ALTER TABLE ai_messages NO FORCE ROW LEVEL SECURITY")
    after = FIRST
    while rows := bind.execute(PAGE, {**after, "limit": BATCH}).all():
        changed = [
            {"tenant": t, "conversation": c, "seq": s, "content": new}
            for t, c, s, content in rows
            if (new := scrubbed_message(content)) != content
        ]
        if changed:
            bind.execute(REWRITE, changed)
        tenant, conversation, seq, _ = rows[-1]
        after = {"tenant": tenant, "conversation": conversation, "seq": seq}
    op.execute("ALTER TABLE ai_messages FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    pass  # the scrubbed values are not kept anywhere, so there is nothing to put back
