"""The tool registry: what a model may ask for, described so the gateway can check every call.

An app registers each tool once: a name, what it does, JSON Schemas for its arguments and its
result, the Cedar action it performs, a risk tier, which arguments are sensitive (money,
recipients, accounts, other principals' ids), and which result fields are trusted system data
(JSON Pointers: every other field is untrusted content).
The gateway does the rest: it shows the model only the tools its user may call, refuses unknown
tools and malformed arguments before anything runs, re-authorizes each call with Cedar, and
turns risky calls into approval requests. See docs/ai-gateway.md.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.pointers import (
    Place,
    PointerError,
    check_against_schema,
    keys,
    matches,
    parse,
    places,
    property_names,
)
from ramparts.identity.auth import Principal
from ramparts.policy.engine import Channel, PolicyAction, Target

__all__ = [
    "AfterUntrusted",
    "Risk",
    "Tool",
    "ToolError",
    "ToolOutcomeUnknown",
    "ToolRegistry",
    "ToolRun",
    "ToolSchemaError",
]

TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    HIGH = "high"  # never runs after untrusted content entered the conversation: approval


class AfterUntrusted(StrEnum):
    """What a call of a tool gets once untrusted content entered the conversation (a vendor's
    text, a webhook payload, a user message with the signs of an injection)."""

    RUN = "run"  # the default of `read` tools
    APPROVAL = "approval"  # the default of `write` and `high` tools: a different person decides
    REFUSE = "refuse"  # the call is refused outright


class ToolSchemaError(ValueError):
    """A tool was registered with a schema the gateway cannot enforce."""


class ToolError(Exception):
    """The tool refused the call for a reason its user may read (not found, wrong status)."""


class ToolOutcomeUnknown(Exception):  # noqa: N818 - a state, not a fault of the caller
    """The tool called a system that did not answer, and the call may have taken effect
    there (a payment provider's timeout): nothing may be closed on it. The approval stays
    pending, and approving it again repeats the same call (with the same idempotency key),
    which settles it; the message says what did not answer, in words its user may read."""


def _nothing_allowed(action: PolicyAction, target: Target) -> bool:
    return False


@dataclass(frozen=True, kw_only=True)
class ToolRun:
    """Everything a tool body gets: a tenant session of the acting user's tenant, that user,
    the conversation the call belongs to, arguments already validated against the tool's
    schema (and unmasked), and `may`, which asks Cedar whether the user may do an action on a
    resource through `channel` (a tool that returns several resources keeps only those).

    The acting user (`principal`) is always the person who asked (the assistant, or an app's
    route directly), also when the call waited for approval: it then runs with their current
    roles, in their conversation, and `approved_by` is the person who confirmed it (None: it
    ran without approval), `approval_id` the request's id (a stable key for what the call
    does outside, such as a PSP's idempotency key). What a tool creates or changes is the
    requester's, never the approver's. `conversation_id` is None for a request a person made
    directly, in no conversation.

    `channel` is the one the call is authorized under: `ai_tool` for a call the model made
    and the gateway ran; `api` for an approved call, which a person confirmed, so the
    requester is judged as if they made it themselves."""

    session: AsyncSession
    principal: Principal
    conversation_id: uuid.UUID | None
    channel: Channel
    arguments: dict[str, Any]
    may: Callable[[PolicyAction, Target], bool] = _nothing_allowed
    approved_by: Principal | None = None
    approval_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    arguments: Mapping[str, Any]  # JSON Schema of the arguments object
    result: Mapping[str, Any]  # JSON Schema of what the tool returns
    action: PolicyAction
    risk: Risk
    run: Callable[[ToolRun], Awaitable[dict[str, Any]]]
    #: The Cedar resource a call acts on, found from its (validated) arguments.
    target: Callable[[ToolRun], Awaitable[Target]]
    sensitive: frozenset[str] = frozenset()
    #: JSON Pointers (see `pointers`: `/id`, `/items/*/id`) of the result fields that are
    #: system data the user may read (ids, statuses, amounts the database computes): only
    #: their values back sensitive arguments. Every other field is untrusted content (text
    #: a vendor, a customer or a payer wrote), and taints the conversation.
    trusted: frozenset[str] = frozenset()
    #: A call after untrusted content entered the conversation; None is the tier's default
    #: (`read` runs, `write` and `high` wait for approval). A `high` tool never runs on it.
    after_untrusted: AfterUntrusted | None = None
    #: A model's call never runs by itself, whatever backs it: it always waits as an approval
    #: request for a different person (money). Cedar is asked whether it may wait at all
    #: (`context.held`), and it runs once, when approved.
    always_held: bool = False
    _arguments: Draft202012Validator = field(init=False, repr=False, compare=False)
    _result: Draft202012Validator = field(init=False, repr=False, compare=False)
    _trusted: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    _result_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not TOOL_NAME.fullmatch(self.name):
            raise ToolSchemaError(f"tool name {self.name!r}: lowercase letters, digits, _")
        for label, schema in (("arguments", self.arguments), ("result", self.result)):
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ToolSchemaError(f"{self.name} {label} schema: {exc.message}") from None
            if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
                raise ToolSchemaError(
                    f"{self.name} {label} schema must be an object with additionalProperties "
                    "false: unknown fields are refused, never ignored"
                )
        if self.risk is Risk.HIGH and self.after_untrusted is AfterUntrusted.RUN:
            raise ToolSchemaError(
                f"{self.name}: a high-risk tool never runs after untrusted content"
            )
        if self.always_held and self.after_untrusted is AfterUntrusted.RUN:
            raise ToolSchemaError(f"{self.name}: a tool always held never runs by itself")
        unknown = self.sensitive - set(self.arguments.get("properties", {}))
        if unknown:
            raise ToolSchemaError(f"{self.name}: sensitive names no argument: {sorted(unknown)}")
        try:
            check_against_schema(self.trusted, self.result)
        except PointerError as exc:
            raise ToolSchemaError(f"{self.name} trusted: {exc}") from None
        object.__setattr__(self, "_trusted", tuple(parse(p) for p in sorted(self.trusted)))
        object.__setattr__(self, "_result_names", property_names(self.result))
        checker = Draft202012Validator.FORMAT_CHECKER  # "format": "uuid" is enforced
        object.__setattr__(
            self, "_arguments", Draft202012Validator(self.arguments, format_checker=checker)
        )
        object.__setattr__(
            self, "_result", Draft202012Validator(self.result, format_checker=checker)
        )

    @property
    def untrusted_rule(self) -> AfterUntrusted:
        """`after_untrusted`, or the default of the tool's risk tier."""
        if self.after_untrusted is not None:
            return self.after_untrusted
        return AfterUntrusted.RUN if self.risk is Risk.READ else AfterUntrusted.APPROVAL

    def argument_errors(self, arguments: object) -> list[str]:
        return _errors(self._arguments, arguments)

    def result_errors(self, result: object) -> list[str]:
        return _errors(self._result, result)

    def split_result(
        self, result: dict[str, Any]
    ) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """The result's scalars, each with its pointer: those at a declared trusted path, and
        the others. Booleans and nulls are in neither: they carry no text to steer a model
        and no value to back an argument. An object key the result schema does not declare
        is data too (a map keyed by whatever a third party wrote): untrusted."""
        trusted: list[tuple[str, Any]] = []
        untrusted: list[tuple[str, Any]] = []
        for place, value in places(result):
            if value is None or isinstance(value, bool):
                continue
            if any(matches(path, place) for path in self._trusted):
                trusted.append((place.pointer, value))
            else:
                untrusted.append((self._shown(place), value))
        untrusted += [
            (self._shown(place), key)
            for place, key in keys(result)
            if key not in self._result_names
        ]
        return trusted, untrusted

    def _shown(self, place: Place) -> str:
        """The pointer of `place` as an approver and the audit trail see it: a key the schema
        does not declare is data (an IBAN, a name), so it is shown as `(key)`."""
        tokens = tuple(
            t if i in place.items or t in self._result_names else "(key)"
            for i, t in enumerate(place.tokens)
        )
        return Place(tokens, place.items).pointer

    def describe(self) -> dict[str, Any]:
        """The tool as a model sees it (OpenAI's function-tool shape)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.arguments),
            },
        }


def _errors(validator: Draft202012Validator, value: object) -> list[str]:
    """Every schema violation, each naming where it is (never echoing the value)."""
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(part) for part in error.absolute_path) or "(arguments)"
        found.append(f"{where}: {error.validator} {error.validator_value!r}"[:300])
    return found


class ToolRegistry:
    """The tools of one app; the gateway reads it, apps add to it."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool) -> Tool:
        if tool.name in self._tools:
            raise ToolSchemaError(f"tool {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def uuid_argument(run: ToolRun, name: str) -> uuid.UUID:
    """A UUID argument (the schema checked its format; this is the last word)."""
    try:
        return uuid.UUID(str(run.arguments[name]))
    except ValueError:
        raise ToolError(f"{name} is not a UUID") from None
