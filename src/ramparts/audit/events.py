"""What an audit event says: the action tag, the decision, who acted, on what.

Action tags are one enum named `domain:subject:action`, so every event type is declared here
once and a typo is a type error, not a new event type nobody queries for.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["SYSTEM_TENANT", "Action", "Actor", "Decision", "Resource"]

#: The chain for events that belong to no tenant (or to one nobody has proven yet): a login
#: for an unknown organisation, a bearer token whose signature does not verify, key rotation.
SYSTEM_TENANT = uuid.UUID(int=0)


class Action(StrEnum):
    # identity: people signing in
    LOGIN_SUCCEEDED = "identity:login:succeeded"
    LOGIN_FAILED = "identity:login:failed"
    ACCOUNT_LOCKED = "identity:account:locked"
    ADDRESS_LOCKED = "identity:address:locked"
    SECOND_FACTOR_LOCKED = "identity:second_factor:locked"  # an alert: the password is known
    TOTP_ENROLLED = "identity:totp:enrolled"
    TOTP_FAILED = "identity:totp:failed"
    TOTP_REPLAYED = "identity:totp:replayed"
    RECOVERY_CODE_USED = "identity:recovery_code:used"
    PASSKEY_REGISTERED = "identity:passkey:registered"
    PASSKEY_REFUSED = "identity:passkey:refused"
    USER_ENDPOINT_REFUSED = "identity:user_endpoint:refused"  # a service on a user-only route
    FEDERATED_LOGIN_FAILED = "identity:federated_login:failed"
    # identity: tokens and sessions
    TOKEN_ISSUED = "identity:token:issued"
    TOKEN_REJECTED = "identity:token:rejected"
    TOKEN_REFUSED = "identity:token:refused"
    REFRESH_TOKEN_REUSED = "identity:refresh_token:reused"
    AUTHORIZATION_CODE_REUSED = "identity:authorization_code:reused"
    SESSION_ENDED = "identity:session:ended"
    # identity: service clients and configuration
    CLIENT_AUTHENTICATION_FAILED = "identity:client:authentication_failed"
    CLIENT_ASSERTION_REPLAYED = "identity:client_assertion:replayed"
    SERVICE_CLIENT_CREATED = "identity:service_client:created"
    SERVICE_CLIENT_REVOKED = "identity:service_client:revoked"
    SIGNING_KEY_ROTATED = "identity:signing_key:rotated"
    USER_SET = "identity:user:set"
    IDENTITY_PROVIDER_SET = "identity:identity_provider:set"
    FEDERATED_IDENTITY_LINKED = "identity:federated_identity:linked"
    # authorization: every Cedar decision, allow and deny, with the policies that made it
    TENANT_DELETED = "identity:tenant:deleted"  # and its keys shredded
    DATA_KEY_ROTATED = "crypto:data_key:rotated"
    FIELDS_REENCRYPTED = "crypto:fields:reencrypted"
    KMS_KEY_ROTATED = "crypto:kms_key:rotated"
    AUTHORIZATION_DECIDED = "policy:request:decided"
    ASSISTANT_ANSWERED = "ai:assistant:answered"
    ASSISTANT_REFUSED = "ai:assistant:refused"
    TOOL_CALLED = "ai:tool:called"
    INJECTION_SUSPECTED = "ai:injection:suspected"
    CONTENT_REFUSED = "ai:content:refused"
    APPROVAL_REQUESTED = "ai:approval:requested"
    APPROVAL_DECIDED = "ai:approval:decided"
    KILLSWITCH_SET = "ai:killswitch:set"
    DLP_RULES_SET = "ai:dlp_rules:set"
    AI_ACCESS_LOCKED = "ai:access:locked"  # an alert: repeated refusals or injection signs
    # the audit trail itself
    AUDIT_EVENTS_READ = "audit:events:read"


class Decision(StrEnum):
    """Whether what was asked for happened (`allow`) or was refused (`deny`)."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class Actor:
    """Who acted. `kind` is `user`, `service`, `anonymous` (not signed in yet) or `system`.

    `ip` and `user_agent` are filled from the request being served when left out.
    """

    kind: str
    tenant: uuid.UUID | None = None
    id: str | None = None
    username: str | None = None
    roles: Sequence[str] = ()
    auth: Sequence[str] = ()  # the `amr` of the session, e.g. ("pwd", "otp")
    client_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in {"user", "service", "anonymous", "system"}:
            raise ValueError(f"unknown actor kind {self.kind!r}")

    @classmethod
    def system(cls, name: str = "ramparts") -> Actor:
        return cls(kind="system", id=name)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tenant": str(self.tenant) if self.tenant else None,
            "id": self.id,
            "username": self.username,
            "roles": sorted(self.roles),
            "auth": sorted(self.auth),
            "client_id": self.client_id,
            "ip": self.ip,
            "user_agent": self.user_agent,
        }


@dataclass(frozen=True)
class Resource:
    type: str
    id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, **self.attributes}
