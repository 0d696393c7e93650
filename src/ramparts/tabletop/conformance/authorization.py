"""Live checks of the authorization controls: policies as code (AZ-1), tenant isolation at
both layers (AZ-2), the append-only, redacted audit trail (AZ-4) and encryption at rest with
per-tenant keys (AZ-5). (AZ-3, the model's tools, is checked with the AI controls.) Each
lives in a module of its own; this one registers them."""

from __future__ import annotations

from ramparts.tabletop.conformance import audit_trail, encryption, isolation, policy_review
from ramparts.tabletop.conformance.checks import Outcome, check
from ramparts.tabletop.target import Target

__all__ = ["audit_kept", "encrypted_at_rest", "policies_as_code", "tenants_apart"]


@check("AZ-1")
def policies_as_code(target: Target) -> Outcome:
    return policy_review.check(target)


@check("AZ-2")
def tenants_apart(target: Target) -> Outcome:
    return isolation.check(target)


@check("AZ-4")
def audit_kept(target: Target) -> Outcome:
    return audit_trail.check(target)


@check("AZ-5")
def encrypted_at_rest(target: Target) -> Outcome:
    return encryption.check(target)
