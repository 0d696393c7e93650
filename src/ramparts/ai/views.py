"""HTTP for the assistant: `POST /api/assistant`, the approval requests, and a tenant admin's
kill-switch. Every route declares its Cedar action."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from ramparts.ai.approvals import Approvals
from ramparts.ai.dlp import forbidden_kinds, set_forbidden_kinds
from ramparts.ai.gateway import Gateway
from ramparts.ai.killswitch import set_switch, switches
from ramparts.ai.masking import MASKED_KINDS
from ramparts.ai.refusals import GatewayRefusedError
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database
from ramparts.detectors import Kind
from ramparts.identity.auth import BearerAuthenticator, Principal, actor_of
from ramparts.policy.engine import PolicyAction, RuntimeAction, Target
from ramparts.policy.services import Authorizer
from ramparts.problems import Problem, ProblemType
from ramparts.routes import declares

__all__ = ["AI_UNAVAILABLE", "build_router"]

#: What a route that reaches the model or runs a tool answers when the kill-switch is on or no
#: model endpoint serves the tenant's region: a deliberate refusal, documented as such
#: (problem+json: `ai-disabled`, `no-model-endpoint`).
AI_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the assistant or the tool is switched off, or no model serves here"}
}


class AssistantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1, max_length=8_000)
    conversation_id: Annotated[uuid.UUID | None, Field(strict=False)] = None


class DlpIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    forbidden: list[Annotated[Kind, Field(strict=False)]] = Field(max_length=len(MASKED_KINDS))


class KillSwitchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    engaged: bool
    tool: str = Field(default="", pattern=r"^[a-z0-9_]{0,64}$")
    reason: str = Field(default="", max_length=500)


def _effective(switches: dict[str, list[str]], tool: str) -> dict[str, Any]:
    """Whether `tool` ('' = the assistant) is off, whatever set it, and who keeps it off."""
    held = sorted({*switches.get("", []), *switches.get(tool, [])})
    return {"tool": tool or None, "engaged": bool(held), "held_by": held}


def _killswitch_routes(
    router: APIRouter,
    database: Database,
    audit: AuditLog,
    Caller: Any,  # noqa: N803 - the router's type alias of an authenticated caller
    require: Callable[[Principal, PolicyAction], Awaitable[None]],
) -> None:
    """A tenant admin's kill-switch: set it, and read the effective state."""

    @router.post(
        "/api/assistant/killswitch", openapi_extra=declares(RuntimeAction.ASSISTANT_CONFIGURE)
    )
    async def killswitch(principal: Caller, body: KillSwitchIn) -> dict[str, Any]:
        """Switch the tenant's assistant (or one tool) off or on, for every process at once."""
        await require(principal, RuntimeAction.ASSISTANT_CONFIGURE)
        async with database.tenant_session(principal.tenant_id) as session:
            # The tenant's own switch, never an operator's.
            await set_switch(
                session,
                audit,
                actor_of(principal),
                engaged=body.engaged,
                tool=body.tool,
                reason=body.reason,
            )
            held = await switches(session)
        # The effective state, not the echo of the request: lifting the tenant's own switch
        # does not restart an assistant an operator keeps off.
        return _effective(held, body.tool) | {"requested": body.engaged}

    @router.get(
        "/api/assistant/killswitch", openapi_extra=declares(RuntimeAction.ASSISTANT_CONFIGURE)
    )
    async def killswitch_state(principal: Caller) -> dict[str, Any]:
        """Whether the tenant's assistant is off and who keeps it off; the tools switched off."""
        await require(principal, RuntimeAction.ASSISTANT_CONFIGURE)
        async with database.tenant_session(principal.tenant_id) as session:
            held = await switches(session)
        tools = [_effective(held, tool) for tool in sorted(held) if tool]
        return _effective(held, "") | {"tools": tools}


def _problem(refused: GatewayRefusedError) -> Problem:
    headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
    return Problem(refused.status, refused.kind, refused.detail, headers=headers)


def build_router(
    database: Database,
    bearer: BearerAuthenticator,
    authorizer: Authorizer,
    *,
    gateway: Gateway,
    approvals: Approvals,
    audit: AuditLog,
    ui_client: str,
) -> APIRouter:
    router = APIRouter(tags=["assistant"])
    Caller = Annotated[Principal, Depends(bearer)]  # noqa: N806 - a type alias

    async def require(principal: Principal, action: PolicyAction) -> None:
        tenant = str(principal.tenant_id)
        context = await authorizer.context(principal, ui_client=ui_client)
        await authorizer.require(
            principal, action, Target(action.entity_type, tenant, tenant), context
        )

    @router.post(
        "/api/assistant",
        responses=AI_UNAVAILABLE,
        openapi_extra=declares(RuntimeAction.MODEL_CALL, people_only=True),
    )
    async def assistant(principal: Caller, body: AssistantIn) -> dict[str, Any]:
        """Ask the assistant. Tool calls it makes come back in `actions`, each executed,
        refused or pending approval, with the reason."""
        try:
            answer = await gateway.converse(principal, body.message, body.conversation_id)
        except GatewayRefusedError as refused:
            raise _problem(refused) from None
        return {
            "conversation_id": str(answer.conversation_id),
            "reply": answer.reply,
            "actions": [outcome.as_json() for outcome in answer.actions],
        }

    @router.get(
        "/api/assistant/tools",
        responses=AI_UNAVAILABLE,
        openapi_extra=declares(RuntimeAction.MODEL_CALL, people_only=True),
    )
    async def assistant_tools(principal: Caller) -> list[dict[str, str]]:
        """The tools the assistant would offer the caller now (the gateway's own filter: those
        they may call, not switched off): `name`, `description`, `risk`."""
        try:
            tools = await gateway.tools(principal)
        except GatewayRefusedError as refused:
            raise _problem(refused) from None
        return [
            {"name": tool.name, "description": tool.description, "risk": tool.risk.value}
            for tool in tools
        ]

    @router.get("/api/approvals", openapi_extra=declares(RuntimeAction.ASSISTANT_APPROVE))
    async def pending(principal: Caller) -> dict[str, Any]:
        """Pending approval requests of the caller's tenant: `items`, those the caller may
        approve now (with the arguments that would run; none of a switched-off tool); `mine`,
        the caller's own, which a different person must decide. Each is marked `mine` true or
        false, and says its `origin`: `assistant` (a model's call held by the gateway) or
        `api` (a person's own request through an app's route, such as a refund)."""
        await require(principal, RuntimeAction.ASSISTANT_APPROVE)
        return await approvals.pending(principal)

    async def decide(principal: Principal, approval_id: uuid.UUID, approve: bool) -> Any:
        await require(principal, RuntimeAction.ASSISTANT_APPROVE)
        try:
            return await approvals.decide(principal, approval_id, approve=approve)
        except GatewayRefusedError as refused:
            raise _problem(refused) from None

    @router.post(
        "/api/approvals/{approval_id}/approve",
        responses=AI_UNAVAILABLE,
        openapi_extra=declares(RuntimeAction.ASSISTANT_APPROVE),
    )
    async def approve(principal: Caller, approval_id: uuid.UUID) -> dict[str, Any]:
        """Run the requested call once, as the person who asked (still allowed to make it),
        confirmed by the caller: a different person, signed in with a second factor in the
        last 10 minutes, who may do the same on a resource of their own."""
        result: dict[str, Any] = await decide(principal, approval_id, True)
        return result

    @router.post(
        "/api/approvals/{approval_id}/reject",
        openapi_extra=declares(RuntimeAction.ASSISTANT_APPROVE),
    )
    async def reject(principal: Caller, approval_id: uuid.UUID) -> dict[str, Any]:
        result: dict[str, Any] = await decide(principal, approval_id, False)
        return result

    _killswitch_routes(router, database, audit, Caller, require)

    @router.get("/api/assistant/dlp", openapi_extra=declares(RuntimeAction.ASSISTANT_CONFIGURE))
    async def dlp_rules(principal: Caller) -> dict[str, Any]:
        """Kinds of personal data the tenant never lets reach a model, not even masked."""
        await require(principal, RuntimeAction.ASSISTANT_CONFIGURE)
        async with database.tenant_session(principal.tenant_id) as session:
            return {"forbidden": sorted(await forbidden_kinds(session))}

    @router.put("/api/assistant/dlp", openapi_extra=declares(RuntimeAction.ASSISTANT_CONFIGURE))
    async def set_dlp_rules(principal: Caller, body: DlpIn) -> dict[str, Any]:
        await require(principal, RuntimeAction.ASSISTANT_CONFIGURE)
        kinds = sorted(set(body.forbidden))
        unknown = [k for k in kinds if k not in MASKED_KINDS]
        if unknown:
            raise Problem(422, ProblemType.INVALID_REQUEST, f"not a DLP kind: {unknown}")
        async with database.tenant_session(principal.tenant_id) as session:
            await set_forbidden_kinds(session, audit, actor_of(principal), kinds)
        return {"forbidden": kinds}

    return router
