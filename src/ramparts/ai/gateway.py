"""The AI tool gateway: everything between a user's message and a tool running, enforced
outside the model, which is assumed fully compromised (AZ-3, AI-1, AI-2, AI-4).

For each message: the kill-switch, secret refusal and PII masking, injection scanning, the
tenant's region picking the model endpoint (Cedar `model.call`), and only the tools the user
may call, and that are not switched off, on offer. For each tool call the model returns: the
kill-switch again, the tool's JSON Schema, provenance (sensitive arguments backed by trusted
data; after untrusted content, each tool's `after_untrusted` rule), Cedar re-authorization on
the real resource through the `ai_tool` channel, a cap per risk tier on the calls one message
leads to, and the result's schema. A call that a person could make but the model may not make
alone (or that its tool says is `always_held`, such as money) becomes an approval request for a
different person, when Cedar lets it wait (`context.held`); otherwise it is refused. Every step
is audited.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.approval_requests import request_approval
from ramparts.ai.conversations import Conversation, Conversations
from ramparts.ai.injection import scan
from ramparts.ai.killswitch import KillSwitch
from ramparts.ai.limits import Limiter, LimitExceededError, Strike, estimate_tokens
from ramparts.ai.masking import Masker, RefusedContentError
from ramparts.ai.model_keys import NoModelKeyError
from ramparts.ai.models import Model, ModelOutputError, ModelTurn, ToolCall, storable
from ramparts.ai.provenance import Provenance, Trust
from ramparts.ai.refusals import GatewayRefusedError
from ramparts.ai.tools import (
    AfterUntrusted,
    Risk,
    Tool,
    ToolError,
    ToolOutcomeUnknown,
    ToolRegistry,
    ToolRun,
)
from ramparts.alerts import Alerter, AlertKind
from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.db.engine import Database
from ramparts.identity.auth import Principal, actor_of
from ramparts.policy.engine import Channel, PolicyAction, RuntimeAction, Target
from ramparts.policy.services import Authorizer, RequestContext
from ramparts.problems import ProblemType

__all__ = [
    "AssistantReply",
    "AssistantService",
    "Gateway",
    "ModelEndpoint",
    "Serving",
    "Status",
    "TenantModels",
    "ToolOutcome",
    "run_checked",
]

log = structlog.get_logger(__name__)
#: Model calls one user message may lead to (each may ask for tool calls).
MAX_STEPS = 4  # RAMPARTS_AI_MAX_STEPS
MAX_MESSAGE_CHARS = 8_000
MAX_CONVERSATION_CHARS = 100_000
MAX_RESULT_CHARS = 20_000  # one tool result, as the model sees it
#: How much of a prompt and of a reply the audit trail keeps with the answer's event.
AUDIT_TEXT_CHARS = 2_000
#: Refusals written to the audit trail where they happen.
AUDITED_APART = frozenset({ProblemType.CONTENT_REFUSED, ProblemType.NO_MODEL_ENDPOINT})
#: Tool calls one user message may lead to, per risk tier (run or sent to approval): the
#: model's turns cannot multiply what one request does.
CALLS_PER_MESSAGE: Mapping[Risk, int] = {Risk.READ: 16, Risk.WRITE: 3, Risk.HIGH: 1}
TIER = {Risk.READ: "read", Risk.WRITE: "write", Risk.HIGH: "high-risk"}


#: A user id no user has: a resource "of someone else" when the gateway judges which tools to
#: offer (ids are UUIDs).
SOMEONE_ELSE = "someone-else"


class Status(StrEnum):
    EXECUTED = "executed"
    REFUSED = "refused"
    PENDING_APPROVAL = "pending_approval"


@dataclass(frozen=True)
class Serving:
    """The adapter that serves one tenant's message, and which credential it carries
    (`{"scope": "tenant" | "shared", "fingerprint"}`, never the key; None: it needs none)."""

    model: Model
    credential: dict[str, str] | None = None


class TenantModels(Protocol):
    """Picks an endpoint's adapter for one tenant: the same model with that tenant's own
    credential. Raises `NoModelKeyError` when the tenant may use none."""

    async def __call__(self, tenant: uuid.UUID) -> Serving: ...


@dataclass(frozen=True)
class ModelEndpoint:
    name: str
    region: str  # the data region it may receive: a tenant pinned to `eu` reaches `eu` only
    model: Model
    #: The adapter per tenant when the model needs a credential; None: `model` serves all.
    per_tenant: TenantModels | None = None

    async def serving(self, tenant: uuid.UUID) -> Serving:
        if self.per_tenant is None:
            return Serving(self.model)
        return await self.per_tenant(tenant)


@dataclass
class ToolOutcome:
    tool: str
    arguments: Any
    status: Status
    reason: str
    approval_id: uuid.UUID | None = None
    #: Each argument's trust by name (`Provenance.argument_trust`): "trusted" when the user's
    #: own words or data they may read vouch for it, "untrusted" otherwise.
    provenance: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "tool": self.tool,
            "arguments": self.arguments,
            "status": self.status.value,
            "reason": self.reason,
            "provenance": self.provenance,
        }
        if self.approval_id is not None:
            shown["approval_id"] = str(self.approval_id)
        return shown


@dataclass
class AssistantReply:
    conversation_id: uuid.UUID
    reply: str
    actions: list[ToolOutcome] = field(default_factory=list)


class AssistantService:
    """What the gateway and its approvals both work with."""

    def __init__(
        self,
        database: Database,
        registry: ToolRegistry,
        authorizer: Authorizer,
        conversations: Conversations,
        audit: AuditLog,
        *,
        ui_client: str,
    ) -> None:
        self._db = database
        self._registry = registry
        self._authorizer = authorizer
        self._conversations = conversations
        self._audit = audit
        self._ui_client = ui_client

    def _tool_run(
        self,
        session: AsyncSession,
        principal: Principal,
        arguments: dict[str, Any],
        *,
        context: RequestContext,
        conversation_id: uuid.UUID | None,
        approved_by: Principal | None = None,
        approval_id: uuid.UUID | None = None,
    ) -> ToolRun:
        """What a tool gets for a call by `principal` in their conversation (None: a request
        they made directly), authorized under `context`: its `may` asks Cedar on the same
        channel the run says it is on."""

        def may(action: PolicyAction, target: Target) -> bool:
            return self._authorizer.decide(principal, action, target, context).allowed

        return ToolRun(
            session=session,
            principal=principal,
            conversation_id=conversation_id,
            channel=context.channel,
            arguments=arguments,
            may=may,
            approved_by=approved_by,
            approval_id=approval_id,
        )


class Gateway(AssistantService):
    def __init__(
        self,
        database: Database,
        registry: ToolRegistry,
        authorizer: Authorizer,
        conversations: Conversations,
        audit: AuditLog,
        *,
        endpoints: list[ModelEndpoint],
        limiter: Limiter,
        kill_switch: KillSwitch,
        ui_client: str,
        calls_per_message: Mapping[Risk, int] = CALLS_PER_MESSAGE,
        max_steps: int = MAX_STEPS,
        alerter: Alerter | None = None,
    ) -> None:
        super().__init__(database, registry, authorizer, conversations, audit, ui_client=ui_client)
        self._endpoints = endpoints
        self._limiter = limiter
        self._alerter = alerter or Alerter()
        self._calls_per_message = {risk: calls_per_message.get(risk, 0) for risk in Risk}
        self._max_steps = max_steps
        self._switch = kill_switch

    @property
    def alerter(self) -> Alerter:
        """Where the abuse alerts go (its owner closes it: `Alerter.aclose`)."""
        return self._alerter

    # --- one message ----------------------------------------------------------------------

    async def converse(
        self, principal: Principal, message: str, conversation_id: uuid.UUID | None
    ) -> AssistantReply:
        if principal.user_id is None:
            raise GatewayRefusedError(403, ProblemType.FORBIDDEN, "the assistant serves people")
        if not message.strip() or len(message) > MAX_MESSAGE_CHARS:
            raise GatewayRefusedError(
                422,
                ProblemType.INVALID_REQUEST,
                f"a message is 1 to {MAX_MESSAGE_CHARS} characters",
            )
        if not storable(message):
            raise GatewayRefusedError(
                422, ProblemType.INVALID_REQUEST, "the message holds NUL or bad UTF-16"
            )
        pending: list[Event] = []  # what this request has to say in the audit trail
        try:
            await self._admit(principal)
            return await self._converse(principal, message, conversation_id, pending)
        except GatewayRefusedError as refused:
            await self._salvage(principal, pending, refused)
            raise
        except Exception:
            await self._salvage(principal, pending, None)
            raise

    async def _converse(
        self,
        principal: Principal,
        message: str,
        conversation_id: uuid.UUID | None,
        pending: list[Event],
    ) -> AssistantReply:
        tenant = principal.tenant_id
        async with self._db.tenant_session(tenant) as session:
            context = await self._authorizer.context(
                principal, ui_client=self._ui_client, session=session
            )
            stopped = await self._switch.stopped(session, tenant)  # refuses when all is off
            conversation = await self._conversations.open(session, principal, conversation_id)
            conversation.events = pending  # kept by the caller: they outlive a rollback
            if sum(len(m["content"]) for m in conversation.messages) > MAX_CONVERSATION_CHARS:
                raise GatewayRefusedError(
                    422,
                    ProblemType.CONVERSATION_TOO_LONG,
                    "this conversation is full: start a new one",
                )
            # Refusals before anything is recorded in this transaction are written apart:
            # they must outlive its rollback.
            try:
                masked = conversation.masker.mask(message)
            except RefusedContentError as refused:
                await self._refuse_apart(
                    principal, Action.CONTENT_REFUSED, conversation.id, {"kinds": refused.kinds}
                )
                raise GatewayRefusedError(
                    422,
                    ProblemType.CONTENT_REFUSED,
                    f"the message holds {', '.join(refused.kinds)}",
                ) from None
            endpoint = await self._endpoint(principal, context, conversation)
            serving = await self._serving(endpoint, principal)
            await self._remember_message(principal, conversation, message, masked)
            ai_context = RequestContext(channel=Channel.AI_TOOL, region=context.region)
            offered = self._offered(principal, ai_context)
            outcomes: list[ToolOutcome] = []
            reply = ""
            for _ in range(self._max_steps):
                if sum(len(m["content"]) for m in conversation.messages) > MAX_CONVERSATION_CHARS:
                    reply = "This conversation is full: start a new one."
                    break
                turn = await self._ask(
                    principal, serving.model, conversation, _shown(offered, stopped)
                )
                if turn is None:
                    reply = "The model's answer was not valid and was refused."
                    break
                if not turn.tool_calls:
                    reply = turn.text or ""
                    break
                # Asked again after every model call: a switch thrown while the model was
                # thinking stops the calls it comes back with.
                stopped = await self._switch.stopped(session, tenant)
                # What the model wrote is stored, replayed and put to an approver masked like
                # its answer; a call runs on exactly that, unmasked, so what is kept is what runs.
                calls = [
                    replace(
                        call,
                        name=conversation.masker.scrub(call.name),
                        arguments=conversation.masker.scrub_value(call.arguments),
                    )
                    for call in turn.tool_calls
                ]
                call_ids = conversation.remember_calls(calls)
                for call, call_id in zip(calls, call_ids, strict=True):
                    # Judged before the call: what its result adds vouches for nothing in it.
                    trust = conversation.provenance.argument_trust(
                        conversation.masker.unmask(call.arguments)
                    )
                    outcome, result = await self._call(
                        session,
                        principal,
                        context=ai_context,
                        conversation=conversation,
                        offered=offered,
                        stopped=stopped,
                        call=call,
                    )
                    outcome.provenance = trust
                    outcomes.append(outcome)
                    if outcome.status is Status.REFUSED:
                        await self._strike(principal, conversation.events)
                    self._remember_result(principal, conversation, call, outcome, result)
                    conversation.messages[-1]["tool_call_id"] = call_id  # what it answers
            reply = conversation.masker.scrub(reply)  # stored and shown again as the model saw
            conversation.remember(
                role="assistant",
                trust=Trust.UNTRUSTED,
                source="model",
                content=reply,
            )
            conversation.events.append(
                Event(
                    actor_of(principal),
                    Action.ASSISTANT_ANSWERED,
                    Resource("conversation", str(conversation.id)),
                    Decision.ALLOW,
                    {
                        "model": endpoint.model.name,
                        "endpoint": endpoint.name,
                        # Which key served it (AI-3): the tenant's own or the shared one.
                        **({"credential": serving.credential} if serving.credential else {}),
                        # The exchange as the model had it: personal data as tokens (and
                        # redacted again by the trail), so the record holds no raw PII.
                        "prompt": masked[:AUDIT_TEXT_CHARS],
                        "actions": [
                            {"tool": o.tool, "arguments": o.arguments, "status": o.status.value}
                            for o in outcomes
                        ],
                        "reply": reply[:AUDIT_TEXT_CHARS],
                    },
                )
            )
            await self._conversations.save(session, tenant, conversation)
            await self._flush_events(session, conversation)
        # Tokens go back to values only here, in the user's own view.
        for outcome in outcomes:
            outcome.arguments = conversation.masker.unmask(outcome.arguments)
        return AssistantReply(conversation.id, conversation.masker.unmask(reply), outcomes)

    async def _remember_message(
        self, principal: Principal, conversation: Conversation, message: str, masked: str
    ) -> None:
        """The user's message, masked, as the model sees it; and, unmasked, what it backs."""
        injection = scan(message)
        # The user's own words are trusted, unless they carry the signs of an injection
        # (pasted from elsewhere): then they back nothing and taint the conversation.
        trust = Trust.UNTRUSTED if injection.hit else Trust.TRUSTED
        if injection.hit:
            conversation.events.append(
                Event(
                    actor_of(principal),
                    Action.INJECTION_SUSPECTED,
                    Resource("conversation", str(conversation.id)),
                    Decision.DENY,
                    {"signs": list(injection.signs), "source": "user"},
                )
            )
            await self._strike(principal, conversation.events)
        conversation.remember(role="user", trust=trust, source="user", content=masked)
        if trust is Trust.TRUSTED:  # what the user typed backs arguments, unmasked
            conversation.provenance.vouch_user(message, conversation.masker.values_in(masked))

    async def _salvage(
        self, principal: Principal, pending: list[Event], refused: GatewayRefusedError | None
    ) -> None:
        """The request failed and its transaction rolled back: what it had to say goes to the
        audit trail anyway, each event on its own, with why it ended."""
        events = list(pending)
        if refused is None or refused.kind not in AUDITED_APART:
            kind = refused.kind if refused is not None else ProblemType.INTERNAL_ERROR
            events.append(
                Event(
                    actor_of(principal),
                    Action.ASSISTANT_REFUSED,
                    Resource("assistant", None),
                    Decision.DENY,
                    {"kind": kind.slug},
                )
            )
        await self._audit.record_many_apart(principal.tenant_id, events)

    async def _admit(self, principal: Principal) -> None:
        try:
            await self._limiter.admit(str(principal.tenant_id), str(principal.user_id))
        except LimitExceededError as exceeded:
            status, kind = {
                "locked": (403, ProblemType.AI_LOCKED),
                "budget": (429, ProblemType.BUDGET_EXHAUSTED),
            }.get(exceeded.kind, (429, ProblemType.RATE_LIMITED))
            raise GatewayRefusedError(
                status, kind, exceeded.detail, retry_after=exceeded.retry_after
            ) from None

    async def _strike(self, principal: Principal, events: list[Event] | None) -> None:
        """A refusal or an injection sign counts against the user. The strike that throttles
        them and the one that locks their AI access each raise an alert (once each, never per
        request; ids and limits only); the lock is also audited: with the request's events
        when it has them (they are written even if it fails), else on its own."""
        tenant, user = str(principal.tenant_id), str(principal.user_id)
        strike = await self._limiter.strike(tenant, user)
        if strike is Strike.COUNTED:
            return
        policy = self._limiter.policy
        crossed = policy.throttle_after if strike is Strike.THROTTLED else policy.lock_after
        await self._alerter.raise_alert(
            AlertKind.AI_ABUSE,
            f"a user's AI access is {strike.value} for repeated abuse",
            {"tenant_id": tenant, "user_id": user, "state": strike.value, "strikes": crossed},
        )
        if strike is Strike.THROTTLED:
            return
        log.warning("ai_access_locked", tenant=tenant, user=principal.subject)
        alert = Event(
            actor_of(principal),
            Action.AI_ACCESS_LOCKED,
            Resource("user", principal.subject),
            Decision.DENY,
            {"reason": "repeated refusals or injection signs"},
        )
        if events is not None:
            events.append(alert)
            return
        await self._audit.record_many_apart(principal.tenant_id, [alert])

    async def _refuse_apart(
        self,
        principal: Principal,
        action: Action,
        conversation: uuid.UUID,
        details: dict[str, Any],
    ) -> None:
        await self._audit.record_apart(
            principal.tenant_id,
            actor_of(principal),
            action,
            Resource("conversation", str(conversation)),
            Decision.DENY,
            details,
        )
        await self._strike(principal, None)

    async def _endpoint(
        self, principal: Principal, context: RequestContext, conversation: Conversation
    ) -> ModelEndpoint:
        """The first endpoint Cedar lets this tenant's data reach; none is a refusal, never a
        fallback to another region."""
        action = RuntimeAction.MODEL_CALL
        for endpoint in self._endpoints:
            target = Target(action.entity_type, endpoint.name, region=endpoint.region)
            decision = self._authorizer.decide(principal, action, target, context)
            if decision.allowed:
                event = self._authorizer.event(principal, action, target, context, decision)
                conversation.events.append(event)
                return endpoint
        for endpoint in self._endpoints[:1]:  # the refusal, in the trail
            target = Target(action.entity_type, endpoint.name, region=endpoint.region)
            await self._authorizer.authorize(principal, action, target, context)
        raise GatewayRefusedError(
            503,
            ProblemType.NO_MODEL_ENDPOINT,
            f"no model endpoint may receive {context.region} data",
        )

    async def _serving(self, endpoint: ModelEndpoint, principal: Principal) -> Serving:
        """The endpoint's adapter with this tenant's own credential; a tenant the policy
        gives none is refused (the call never goes out with another tenant's key)."""
        try:
            return await endpoint.serving(principal.tenant_id)
        except NoModelKeyError as missing:
            raise GatewayRefusedError(
                503,
                ProblemType.NO_MODEL_KEY,
                f"{missing}: an operator sets one (`ramparts keys set-model-key`)",
            ) from None

    async def tools(self, principal: Principal) -> list[Tool]:
        """The tools the assistant would offer `principal` now: those they may call that are
        not switched off, by the very filter a message's model call gets (the kill-switch
        refuses when the whole assistant is off)."""
        async with self._db.tenant_session(principal.tenant_id) as session:
            context = await self._authorizer.context(
                principal, ui_client=self._ui_client, session=session
            )
            stopped = await self._switch.stopped(session, principal.tenant_id)
        ai_context = RequestContext(channel=Channel.AI_TOOL, region=context.region)
        return list(_shown(self._offered(principal, ai_context), stopped).values())

    def _offered(self, principal: Principal, context: RequestContext) -> dict[str, Tool]:
        """Tools the user may call, judged on a resource of their own tenant that is theirs
        (the user is every party its app declares for it, say who asked and who answers) or,
        failing that, someone else's (a four-eyes action, such as approving another person's
        claim, is allowed only there): a tool they may not use on either is never shown
        (re-authorization on the real resource comes at call time)."""
        offered = {}
        direct = RequestContext(channel=Channel.API, region=context.region)
        tenant = str(principal.tenant_id)
        for tool in self._registry:
            kind = tool.action.entity_type
            names = self._authorizer.party_attributes(kind)
            for party in (principal.subject, SOMEONE_ELSE)[: 2 if names else 1]:
                target = Target(kind, "*", tenant, parties=tuple((n, party) for n in names))
                if self._authorizer.decide(principal, tool.action, target, direct).allowed:
                    offered[tool.name] = tool
                    break
        return offered

    async def _ask(
        self,
        principal: Principal,
        model: Model,
        conversation: Conversation,
        offered: dict[str, Tool],
    ) -> ModelTurn | None:
        """One model call, its tokens counted against the user's and tenant's budgets."""
        messages = list(conversation.messages)
        tools = [tool.describe() for tool in offered.values()]
        turn: ModelTurn | None
        try:
            turn = await model.complete(messages, tools)
        except ModelOutputError:
            turn = None
        answer = "" if turn is None else (turn.text or "") + repr(turn.tool_calls)
        spent = estimate_tokens(*(m["content"] for m in messages), json.dumps(tools), answer)
        await self._limiter.spend(str(principal.tenant_id), str(principal.user_id), spent)
        return turn

    # --- one tool call --------------------------------------------------------------------

    async def _call(  # noqa: PLR0911 - one return per refusal, each with its reason
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        context: RequestContext,
        conversation: Conversation,
        offered: dict[str, Tool],
        stopped: frozenset[str],
        call: ToolCall,
    ) -> tuple[ToolOutcome, dict[str, Any] | None]:
        def refused(reason: str, why: str | None = None) -> tuple[ToolOutcome, None]:
            conversation.events.append(
                _call_event(principal, call.name, Decision.DENY, why or reason)
            )
            return ToolOutcome(call.name, call.arguments, Status.REFUSED, reason), None

        tool = offered.get(call.name)
        if tool is None:
            known = self._registry.get(call.name) is not None
            return refused("not available to you" if known else "no such tool", "not offered")
        if tool.name in stopped:
            return refused("this tool is switched off", "kill-switch")
        if conversation.provenance.tainted and tool.untrusted_rule is AfterUntrusted.REFUSE:
            return refused(
                f"{tool.name} never runs after untrusted content entered the conversation",
                "after-untrusted",
            )
        arguments: dict[str, Any] = call.arguments
        unmasked = conversation.masker.unmask(arguments)
        problem = _argument_problem(tool, unmasked, conversation.masker)
        if problem is not None:
            return refused(f"invalid arguments: {problem}", "schema")
        run = self._tool_run(
            session, principal, unmasked, context=context, conversation_id=conversation.id
        )
        try:
            target = await tool.target(run)
        except ToolError as exc:
            return refused(str(exc))
        except Exception:  # a bug in a tool is its refusal, not the request's 500
            log.exception("tool_target_failed", tool=tool.name)
            return refused("the tool failed")
        decision = self._authorizer.decide(principal, tool.action, target, context)
        conversation.events.append(
            self._authorizer.event(principal, tool.action, target, context, decision)
        )
        # Whatever happens next, the user must be allowed to do this themselves: an approval
        # lets a second person confirm what the user may do, never widen it.
        direct = RequestContext(channel=Channel.API, region=context.region)
        if not self._authorizer.decide(principal, tool.action, target, direct).allowed:
            return refused(f"{tool.action} is not allowed here")
        used = conversation.calls.get(tool.risk, 0)
        cap = self._calls_per_message[tool.risk]
        if used >= cap:
            return refused(f"at most {cap} {TIER[tool.risk]} calls per message", "call-cap")
        conversation.calls[tool.risk] = used + 1
        reason = _approval_reason(conversation.provenance, tool, unmasked, decision.allowed)
        if reason is not None:
            # Cedar decides whether the model's call may even wait for a second person
            # (`context.held`): money on the ai_tool channel only ever does so, and only for
            # the roles that move it.
            held_context = context.holding()
            held = self._authorizer.decide(principal, tool.action, target, held_context)
            conversation.events.append(
                self._authorizer.event(principal, tool.action, target, held_context, held)
            )
            if not held.allowed:
                return refused(f"{tool.action} may not be asked of the assistant")
            approval = await request_approval(
                session,
                principal,
                conversation=conversation,
                tool=tool,
                arguments=arguments,
                reason=reason,
                # Every argument's origins: the approver sees each one's, not only the
                # sensitive ones that decided the call waits.
                origins=conversation.provenance.origins(unmasked, frozenset(unmasked)),
            )
            outcome = ToolOutcome(tool.name, arguments, Status.PENDING_APPROVAL, reason, approval)
            return outcome, None
        try:
            result = await run_checked(session, tool, run)
        except (ToolError, ToolOutcomeUnknown) as exc:
            return refused(str(exc))
        conversation.events.append(_call_event(principal, tool.name, Decision.ALLOW, "executed"))
        # A result that echoes an argument nothing trusted backed does not make it trusted.
        conversation.provenance.note_given(unmasked)
        return ToolOutcome(tool.name, arguments, Status.EXECUTED, "done"), result

    # --- what the request records ---------------------------------------------------------

    async def _flush_events(self, session: AsyncSession, conversation: Conversation) -> None:
        """Record the request's audit events not yet in this transaction: one statement."""
        # The events stay in the caller's list: if the commit fails after this, they are
        # written again on their own (see `_salvage`).
        new = conversation.events[conversation.flushed :]
        if new:
            await self._audit.record_many(session, new)
            conversation.flushed = len(conversation.events)

    def _remember_result(
        self,
        principal: Principal,
        conversation: Conversation,
        call: ToolCall,
        outcome: ToolOutcome,
        result: dict[str, Any] | None,
    ) -> None:
        """What the model sees next: the result, masked. Its declared trusted fields back
        arguments (on their real values); every other field is untrusted content."""
        tool = self._registry.get(call.name)
        if result is None or tool is None:
            shown = {"status": outcome.status.value, "reason": outcome.reason}
            conversation.remember(
                role="tool",
                trust=Trust.TRUSTED,
                source="gateway",
                content=json.dumps(shown),
                record_provenance=False,  # the gateway's words back nothing either
            )
            return
        try:
            # A credential in a result is the tool's data, not the user's doing: redacted.
            masked = conversation.masker.mask_value(result, redact_secrets=True)
        except RefusedContentError as refused:  # a forbidden kind: the model never sees it
            kinds = ", ".join(refused.kinds)
            self._withhold(conversation, f"the result holds {kinds}")
            return
        content = json.dumps(masked, ensure_ascii=False)
        if len(content) > MAX_RESULT_CHARS:
            self._withhold(conversation, f"the result is over {MAX_RESULT_CHARS} characters")
            return
        conversation.provenance.record_result(tool.name, *tool.split_result(result))
        trusted, untrusted = tool.split_result(masked)  # the same places, as the model sees them
        for field_name, values in _by_field(untrusted).items():
            signs = scan(json.dumps(values)).signs
            if signs:
                conversation.events.append(
                    Event(
                        actor_of(principal),
                        Action.INJECTION_SUSPECTED,
                        Resource("tool", tool.name),
                        Decision.DENY,
                        {"signs": list(signs), "source": f"{tool.name}:{field_name}"},
                    )
                )
        conversation.provenance.add(Trust.TRUSTED, f"tool:{tool.name}", dict(trusted))
        if untrusted:
            conversation.provenance.add(
                Trust.UNTRUSTED, f"tool:{tool.name}:content", dict(untrusted)
            )
        conversation.remember(
            role="tool",
            trust=Trust.UNTRUSTED if untrusted else Trust.TRUSTED,
            source=f"tool:{tool.name}",
            content=content,
            record_provenance=False,
        )

    def _withhold(self, conversation: Conversation, reason: str) -> None:
        """The model learns only that a result exists and why it may not see it."""
        conversation.remember(
            role="tool",
            trust=Trust.TRUSTED,
            source="gateway",
            content=json.dumps({"status": "withheld", "reason": reason}),
            record_provenance=False,
        )


async def run_checked(session: AsyncSession, tool: Tool, run: ToolRun) -> dict[str, Any]:
    """Run the tool in a savepoint and check its result: a result that breaks the tool's
    schema is refused, and what the tool did is undone with it."""
    try:
        async with session.begin_nested():
            return _checked(tool, await tool.run(run))
    except (ToolError, ToolOutcomeUnknown):
        raise
    except Exception:  # a bug in a tool is its refusal, not the request's 500
        log.exception("tool_failed", tool=tool.name)
        raise ToolError("the tool failed") from None


def _checked(tool: Tool, result: dict[str, Any]) -> dict[str, Any]:
    errors = tool.result_errors(result)
    if errors:
        raise ToolError("the tool's result broke its schema: " + "; ".join(errors))
    return result


def _argument_problem(tool: Tool, unmasked: object, masker: Masker) -> str | None:
    """Why the arguments are refused, if they are: never holding a placeholder the
    conversation did not make, and checked as the tool would get them (a `pattern` or
    `format` judges the value a placeholder stands for, not the placeholder)."""
    if masker.has_token(unmasked):
        return "a placeholder this conversation never made"
    errors = tool.argument_errors(unmasked)
    return "; ".join(errors) if errors else None


def _by_field(found: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Scalars found in a result (pointer, value), grouped by the top-level field they are in
    (`/items/0/description` is in `items`): each is scanned for injection signs on its own."""
    grouped: dict[str, list[Any]] = {}
    for pointer, value in found:
        grouped.setdefault(pointer.split("/")[1], []).append(value)
    return grouped


def _approval_reason(
    provenance: Provenance, tool: Tool, arguments: dict[str, Any], allowed: bool
) -> str | None:
    """Why a call the user may make waits for a different person, if it does (judged on
    the arguments as they would run, unmasked)."""
    unbacked = provenance.unbacked(arguments, tool.sensitive)
    if unbacked:
        return f"{', '.join(unbacked)} not backed by anything you said or may read"
    if provenance.tainted and tool.untrusted_rule is AfterUntrusted.APPROVAL:
        return f"a {TIER[tool.risk]} call after untrusted content entered the conversation"
    if tool.always_held:
        return f"{tool.name} always waits for a different person's approval"
    if not allowed:
        return "the model may not do this alone"
    return None


def _shown(offered: dict[str, Tool], stopped: frozenset[str]) -> dict[str, Tool]:
    """The tools a model call is given: a switched-off tool is not offered, so the model
    cannot even ask for it."""
    return {name: tool for name, tool in offered.items() if name not in stopped}


def _call_event(principal: Principal, tool: str, decision: Decision, why: str) -> Event:
    return Event(
        actor_of(principal),
        Action.TOOL_CALLED,
        Resource("tool", tool[:100]),
        decision,
        {"reason": why[:300]},
    )
