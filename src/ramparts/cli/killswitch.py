"""`ramparts killswitch`: the operator's switch on the AI assistant."""

from __future__ import annotations

import asyncio
import re
from enum import StrEnum
from typing import Annotated, Any

import typer

from ramparts.ai.killswitch import OperatorScope, set_switch
from ramparts.audit.events import SYSTEM_TENANT, Actor
from ramparts.cli.common import JsonOption, UsageError, audit_log, print_result, with_owner
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, open_database
from ramparts.identity.services import Provisioning

__all__ = ["killswitch"]


class Switch(StrEnum):
    ON = "on"
    OFF = "off"


def killswitch(
    state: Annotated[Switch, typer.Argument(help="on: stop the assistant; off: let it run.")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant slug (default: every tenant).")
    ] = None,
    tool: Annotated[str, typer.Option("--tool", help="One tool (default: all of them).")] = "",
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Stop (or restart) the AI assistant, globally, for one tenant, or for one tool: every
    server process sees it at its next request or tool call."""
    if not re.fullmatch(r"[a-z0-9_]{0,64}", tool):
        raise UsageError(f"--tool {tool!r}: a tool name is lowercase letters, digits and _")
    settings = load_settings()

    async def switch(owner: Database) -> dict[str, Any]:
        kms = open_kms(settings)
        audit = audit_log(settings, owner, kms)
        record = None
        if tenant is not None:
            record = await Provisioning(owner, kms, audit).tenant(tenant)
            if record is None:
                raise UsageError(f"no tenant {tenant!r}")
        async with owner.tenant_session(record.id if record else SYSTEM_TENANT) as session:
            await set_switch(
                session,
                audit,
                Actor.system("ramparts-cli"),
                engaged=state is Switch.ON,
                tool=tool,
                reason=reason,
                operator=OperatorScope(record.id if record else None),
            )
        return {"tenant": tenant, "tool": tool or None, "engaged": state is Switch.ON}

    with open_database(settings) as urls:
        result = asyncio.run(with_owner(urls, switch))
    scope = f"tenant {tenant}" if tenant else "every tenant"
    what = f"tool {tool}" if tool else "the assistant"
    print_result(result, as_json, f"{what} is {'OFF' if state is Switch.ON else 'on'} for {scope}")
