"""Approval requests (AI-4): what the gateway would not run on the model's word, and what a
person asked for directly through an app's route (a refund: `origin` `api`, in no
conversation), decided once by a different person who signed in with a second factor in the
last ten minutes and who may confirm it: they may do the same action on a resource like this
one of their own (someone of the requester's role confirms, on a resource they take part in).
An approved call runs as the person who asked, with their current roles, and only while they
still may make it: the approver confirms, never lends their rights. Every decision, and every
refusal to decide, is audited with both people."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.gateway import AssistantService, run_checked
from ramparts.ai.killswitch import KillSwitch
from ramparts.ai.masking import Masker, redacted
from ramparts.ai.provenance import trust_of
from ramparts.ai.refusals import GatewayRefusedError
from ramparts.ai.tools import Tool, ToolError, ToolOutcomeUnknown, ToolRun
from ramparts.audit.events import Action, Decision, Resource
from ramparts.identity.auth import Principal, actor_of
from ramparts.policy.engine import Channel, PolicyDecision, Target
from ramparts.policy.services import RequestContext
from ramparts.problems import ProblemType

__all__ = ["Approvals"]

log = structlog.get_logger(__name__)

RECENT_SIGN_IN = timedelta(minutes=10)
SECOND_FACTORS = frozenset({"otp", "hwk", "swk", "mfa"})
LISTED = 100  # requests listed at most, of each kind (to decide, and one's own)
PAGE = 100  # pending requests read at a time until enough are listed


@dataclass(frozen=True)
class _Prepared:
    """An approval request as it would run: as the person who asked, confirmed by the
    person deciding."""

    tool: Tool
    run: ToolRun  # `principal` is the requester, `approved_by` the person deciding
    target: Target
    #: Cedar's answer for the person deciding: may they confirm this (see `_as_theirs`).
    approver_decision: PolicyDecision
    #: Cedar's answer now for the person who asked (no roles when gone or disabled).
    requester_decision: PolicyDecision

    @property
    def approver_allowed(self) -> bool:
        return self.approver_decision.allowed

    @property
    def requester_allowed(self) -> bool:
        return self.requester_decision.allowed


class Approvals(AssistantService):
    """Approval requests: listed for the tenant, decided once by a different person who may
    do the same on a resource of their own and signed in (with a second factor) in the last
    ten minutes; run as the person who asked."""

    async def pending(self, principal: Principal) -> dict[str, list[dict[str, Any]]]:
        """`items`: the requests this person could approve now (never their own; only those
        its requester may still make, of tools switched on), each with the exact arguments
        that would run (personal data included: they confirm exactly what runs) and where
        each sensitive argument came from (`origins`: never the value).
        `mine`: their own pending requests, as they asked them. Oldest first, at most
        `LISTED` of each: requests nobody here may decide never push out those they may."""
        tenant = principal.tenant_id
        async with self._db.tenant_session(tenant) as session:
            context = await self._authorizer.context(
                principal, ui_client=self._ui_client, session=session
            )
            try:
                stopped: frozenset[str] | None = await KillSwitch(max_age=0).stopped(
                    session, tenant
                )
            except GatewayRefusedError:  # the whole assistant is off: nothing can run now
                stopped = None
            items: list[dict[str, Any]] = []
            mine: list[dict[str, Any]] = []
            after: tuple[datetime, uuid.UUID] | None = None
            while len(items) < LISTED or len(mine) < LISTED:
                rows = await _pending_page(session, tenant, after)
                others = {row.requested_by for row in rows} - {principal.user_id}
                roles = await _current_roles(session, others)
                names = await _usernames(session, {row.requested_by for row in rows})
                for row in rows:
                    shown = {
                        "id": str(row.id),
                        "origin": row.origin,
                        "tool": row.tool,
                        "reason": row.reason,
                        "provenance": row.provenance,
                        "origins": row.origins,
                        "argument_provenance": _argument_trust(row.arguments, row.origins),
                        "requested_by": str(row.requested_by),
                        "requested_by_name": names.get(row.requested_by),
                        "requested_at": row.created_at.isoformat(),
                        "expires_at": row.expires_at.isoformat(),
                    }
                    if row.requested_by == principal.user_id:
                        if len(mine) < LISTED:
                            arguments = await self._unmasked(
                                session, tenant, row.conversation_id, row.arguments
                            )
                            mine.append({**shown, "arguments": arguments, "mine": True})
                        continue
                    # Gone or disabled (nothing to confirm), or nothing may run now.
                    if row.requested_by not in roles or stopped is None or len(items) >= LISTED:
                        continue
                    requester = _requester(principal, row, roles[row.requested_by])
                    if self._never_decidable(principal, requester, row.tool, context):
                        continue
                    request = await self._prepare(
                        session,
                        principal,
                        context,
                        requester=requester,
                        conversation_id=row.conversation_id,
                        tool_name=row.tool,
                        arguments=row.arguments,
                        stopped=stopped,
                    )
                    if request is None or not (
                        request.approver_allowed and request.requester_allowed
                    ):
                        continue
                    items.append({**shown, "arguments": request.run.arguments, "mine": False})
                if len(rows) < PAGE:
                    break
                after = (rows[-1].created_at, rows[-1].id)
            return {"items": items, "mine": mine}

    async def decide(
        self, approver: Principal, approval_id: uuid.UUID, *, approve: bool
    ) -> dict[str, Any]:
        if approver.user_id is None:
            raise GatewayRefusedError(
                403, ProblemType.NOT_A_USER, "approvals are decided by people"
            )
        try:
            return await self._decide(approver, approval_id, approve=approve)
        except GatewayRefusedError as refused:
            # The request's transaction rolled back; the refusal is written on its own.
            await self._refused(approver, approval_id, f"{refused.kind.slug}: {refused.detail}")
            raise

    async def _decide(
        self, approver: Principal, approval_id: uuid.UUID, *, approve: bool
    ) -> dict[str, Any]:
        tenant = approver.tenant_id
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT conversation_id, tool, arguments, requested_by, requested_amr, "
                        "status, expires_at FROM ai_approvals WHERE tenant_id = :tenant "
                        "AND id = :id FOR UPDATE"
                    ),
                    {"tenant": tenant, "id": approval_id},
                )
            ).first()
            if row is None:
                raise GatewayRefusedError(404, ProblemType.NOT_FOUND, "no such approval request")
            conversation_id, tool_name, arguments, requested_by, _, status, expires_at = row
            if status != "pending":
                raise GatewayRefusedError(409, ProblemType.WRONG_STATUS, f"already {status}")
            if expires_at <= datetime.now(UTC):
                raise GatewayRefusedError(409, ProblemType.WRONG_STATUS, "the request has expired")
            if requested_by == approver.user_id:
                raise GatewayRefusedError(
                    403,
                    ProblemType.FORBIDDEN,
                    "four eyes: a different person must decide this request",
                )
            fresh = approver.auth_time is not None and (
                datetime.now(UTC) - approver.auth_time <= RECENT_SIGN_IN
            )
            if not fresh or not SECOND_FACTORS & set(approver.amr):
                raise GatewayRefusedError(
                    403,
                    ProblemType.REAUTHENTICATION_REQUIRED,
                    "deciding needs a sign-in with a second factor in the last 10 minutes",
                )
            # The approver acts as themselves (not through the model), so Cedar judges them on
            # the channel they use: who may not confirm this may neither approve nor reject it.
            context = await self._authorizer.context(
                approver, ui_client=self._ui_client, session=session
            )
            # The call runs as the person who asked, judged again as they are now (their roles
            # may have gone since; gone or disabled, they have none): an approval confirms what
            # they may do, it never widens it.
            roles = await _current_roles(session, {requested_by})
            requester = _requester(approver, row, roles.get(requested_by, ()))
            request = await self._prepare(
                session,
                approver,
                context,
                requester=requester,
                conversation_id=conversation_id,
                tool_name=tool_name,
                arguments=arguments,
                stopped=frozenset(),  # rejecting works even while the tool is switched off
                approval_id=approval_id,
            )
            if request is None:
                raise GatewayRefusedError(
                    409, ProblemType.WRONG_STATUS, f"{tool_name} cannot run now"
                )
            if not request.approver_allowed:
                raise GatewayRefusedError(
                    403,
                    ProblemType.FORBIDDEN,
                    f"you may not confirm {request.tool.action}: only someone who may "
                    f"{request.tool.action} themselves decides it",
                )
            action, target = request.tool.action, request.target
            await self._audit.record_many(
                session,
                [
                    self._authorizer.event(
                        approver, action, target, context, request.approver_decision
                    ),
                    self._authorizer.event(
                        requester, action, target, _direct(context), request.requester_decision
                    ),
                ],
            )
            finish = partial(self._finish, session, approver, approval_id, requester=requester)
            if not approve:  # rejecting works even while the assistant is switched off
                return await finish(status="rejected")
            if not request.requester_allowed:
                # Refused like any decision: recorded apart, as this transaction rolls back.
                raise GatewayRefusedError(
                    403,
                    ProblemType.FORBIDDEN,
                    f"the person who asked may no longer {request.tool.action}: "
                    "an approval confirms, it never widens",
                )
            if request.tool.name in await KillSwitch(max_age=0).stopped(session, tenant):
                raise GatewayRefusedError(503, ProblemType.AI_DISABLED, "this tool is switched off")
            try:
                result = await run_checked(session, request.tool, request.run)
            except ToolError as exc:
                return await finish(status="failed", reason=str(exc))
            except ToolOutcomeUnknown as exc:
                # It may have happened: nothing is closed (this transaction rolls back), and
                # approving again repeats the very same call, which settles it.
                raise GatewayRefusedError(
                    503,
                    ProblemType.TOOL_OUTCOME_UNKNOWN,
                    f"{exc}; the request stays pending: approve it again to settle it",
                ) from None
            return await finish(status="executed", result=result)

    async def _prepare(
        self,
        session: AsyncSession,
        approver: Principal,
        context: RequestContext,
        *,
        requester: Principal,
        conversation_id: uuid.UUID | None,
        tool_name: str,
        arguments: dict[str, Any],
        stopped: frozenset[str],
        approval_id: uuid.UUID | None = None,
    ) -> _Prepared | None:
        """The request as it would run, as `requester` (the person who asked, as they are
        now) confirmed by `approver`; None when it cannot run now (the tool is gone or in
        `stopped`, switched off, or its resource is gone). A request made directly
        (`conversation_id` None) holds its arguments as they were sent: nothing to unmask."""
        tool = self._registry.get(tool_name)
        if tool is None or tool.name in stopped:
            return None
        unmasked = await self._unmasked(session, approver.tenant_id, conversation_id, arguments)
        if tool.argument_errors(unmasked):
            return None
        # They asked the assistant for what they could do themselves (the gateway's own check
        # when they asked), and a person confirmed it: judged directly, not as the model.
        direct = _direct(context)
        run = self._tool_run(
            session,
            requester,
            unmasked,
            context=direct,
            conversation_id=conversation_id,
            approved_by=approver,
            approval_id=approval_id,
        )
        try:
            target = await tool.target(run)
        except ToolError:
            return None
        except Exception:  # a bug in a tool: this request cannot run, the others still list
            log.exception("tool_target_failed", tool=tool.name)
            return None
        return _Prepared(
            tool,
            run,
            target,
            self._authorizer.decide(
                approver, tool.action, _as_theirs(target, requester, approver), context
            ),
            self._authorizer.decide(requester, tool.action, target, direct),
        )

    def _never_decidable(
        self, approver: Principal, requester: Principal, tool_name: str, context: RequestContext
    ) -> bool:
        """Whether Cedar refuses the tool's action to the approver or the requester whatever
        the resource: such a request is left out of a listing before anything is read for it
        (the answers are remembered per roles), so many of them cost little."""
        tool = self._registry.get(tool_name)
        return tool is not None and (
            self._authorizer.refuses_outright(approver, tool.action, context)
            or self._authorizer.refuses_outright(requester, tool.action, _direct(context))
        )

    async def _unmasked(
        self,
        session: AsyncSession,
        tenant: uuid.UUID,
        conversation_id: uuid.UUID | None,
        arguments: dict[str, Any],
    ) -> Any:
        """The request's arguments with the conversation's placeholders back to values (a
        request made directly, in no conversation, was never masked)."""
        if conversation_id is None:
            return arguments
        tokens = await self._conversations.tokens(session, tenant, conversation_id)
        return Masker.restore(tokens).unmask(arguments)

    async def _finish(
        self,
        session: AsyncSession,
        approver: Principal,
        approval_id: uuid.UUID,
        *,
        requester: Principal,
        status: str,
        result: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Close the request (still pending: the row is locked) and audit the decision: by
        the approver (the actor), on the request of `requester`."""
        stored = result if result is not None else ({"error": reason} if reason else None)
        await session.execute(
            text(
                "UPDATE ai_approvals SET status = :status, decided_by = :user, "
                "decided_at = now(), result = CAST(:result AS jsonb) "
                "WHERE tenant_id = :tenant AND id = :id AND status = 'pending'"
            ),
            {
                "status": status,
                "user": approver.user_id,
                "result": json.dumps(redacted(stored)) if stored is not None else None,
                "tenant": approver.tenant_id,
                "id": approval_id,
            },
        )
        await self._audit.record(
            session,
            actor_of(approver),
            Action.APPROVAL_DECIDED,
            Resource("approval", str(approval_id)),
            Decision.ALLOW if status == "executed" else Decision.DENY,
            {"reason": (reason or status)[:300], "requested_by": requester.subject},
        )
        answer: dict[str, Any] = {"id": str(approval_id), "status": status}
        if result is not None:
            answer["result"] = result
        if reason is not None:
            answer["reason"] = reason
        return answer

    async def _refused(self, approver: Principal, approval_id: uuid.UUID, why: str) -> None:
        """A refused decision, recorded in its own transaction (the request's rolls back)."""
        await self._audit.record_apart(
            approver.tenant_id,
            actor_of(approver),
            Action.APPROVAL_DECIDED,
            Resource("approval", str(approval_id)),
            Decision.DENY,
            {"reason": why},
        )


async def _pending_page(
    session: AsyncSession, tenant: uuid.UUID, after: tuple[datetime, uuid.UUID] | None
) -> list[Any]:
    """The next `PAGE` pending, unexpired requests of the tenant, oldest first, after `after`
    (the created_at and id of the last one read; None: from the start)."""
    created, last = after if after is not None else (None, None)
    result = await session.execute(
        text(
            "SELECT id, conversation_id, origin, tool, arguments, reason, provenance, origins, "
            "requested_by, requested_amr, expires_at, created_at FROM ai_approvals "
            "WHERE tenant_id = :tenant AND status = 'pending' AND expires_at > now() "
            "AND (CAST(:created AS timestamptz) IS NULL "
            "OR (created_at, id) > (CAST(:created AS timestamptz), CAST(:last AS uuid))) "
            "ORDER BY created_at, id LIMIT :page"
        ),
        {"tenant": tenant, "created": created, "last": last, "page": PAGE},
    )
    return list(result.all())


async def _current_roles(
    session: AsyncSession, users: set[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, ...]]:
    """The roles each of `users` holds now, one query for all; a user who is gone or disabled
    is left out (they may do nothing)."""
    if not users:
        return {}
    rows = await session.execute(
        text(
            "SELECT u.id, coalesce(array_agg(m.role ORDER BY m.role) "
            "FILTER (WHERE m.role IS NOT NULL), '{}') FROM users u LEFT JOIN memberships m "
            "ON m.tenant_id = u.tenant_id AND m.user_id = u.id "
            "WHERE u.tenant_id = current_setting('app.tenant_id')::uuid "
            "AND u.id = ANY(:users) AND u.is_active GROUP BY u.id"
        ),
        {"users": list(users)},
    )
    return {user: tuple(roles) for user, roles in rows}


async def _usernames(session: AsyncSession, users: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The username of each of `users` still in the tenant, one query for all."""
    rows = await session.execute(
        text(
            "SELECT id, username FROM users "
            "WHERE tenant_id = current_setting('app.tenant_id')::uuid AND id = ANY(:users)"
        ),
        {"users": list(users)},
    )
    return {user: str(name) for user, name in rows}


def _argument_trust(arguments: Any, origins: dict[str, Any]) -> dict[str, str]:
    """Each argument's trust, from the origins stored with the request: an argument none
    are stored for (a request made before they were kept for every argument) is untrusted,
    as nothing vouches for it."""
    if not isinstance(arguments, dict):
        return {}
    return {name: trust_of(origins.get(name) or []).value for name in arguments}


def _requester(decider: Principal, row: Any, roles: tuple[str, ...]) -> Principal:
    """The person who asked, as Cedar should judge them now: their current roles, and how
    they had signed in when they asked."""
    return Principal(
        subject=str(row.requested_by),
        user_id=row.requested_by,
        tenant_id=decider.tenant_id,
        roles=roles,
        amr=tuple(row.requested_amr or ()),
        acr="",
        client_id="",
        scope="",
        jti=uuid.UUID(int=0),  # not a token: a re-check of who asked
    )


def _as_theirs(target: Target, requester: Principal, approver: Principal) -> Target:
    """Who may confirm a request: someone who may do the same action on a resource like this
    one of their own. The requester's place in the resource (every party of it that is the
    requester) goes to the approver; everything else (tenant, sensitivity, the other parties)
    stays, so Cedar decides with the app's own rules: whoever holds the requester's role
    confirms on a resource of their own, and nobody confirms what they could not do."""
    parties = tuple(
        (name, approver.subject if user == requester.subject else user)
        for name, user in target.parties
    )
    return replace(target, parties=parties)


def _direct(context: RequestContext) -> RequestContext:
    """The channel the requester is judged on: they asked the assistant for what they could
    do themselves (the gateway's own check when they asked), so directly, not as the model."""
    return RequestContext(Channel.API, context.region)
