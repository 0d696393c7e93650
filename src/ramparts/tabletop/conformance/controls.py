"""The controls of the checklist, by stable id (docs/controls.md says what each one's "done"
means); `ramparts conformance` has one row per id, in this order."""

from __future__ import annotations

__all__ = ["CONTROLS", "SECTIONS"]

SECTIONS = {
    "ID": "Identity and authentication",
    "AZ": "RBAC and data boundaries",
    "PAY": "Payments",
    "AI": "AI-specific defenses",
    "PLT": "Platform and delivery",
    "EX": "The example rollout",
}

#: id → the control, as the checklist words it.
CONTROLS: dict[str, str] = {
    "ID-1": "OIDC/OAuth2, short-lived tokens, mandatory MFA; WebAuthn preferred",
    "ID-2": "JWTs with aud/exp/iat, rotating signing keys, server-side refresh tokens with "
    "reuse detection",
    "ID-3": "Service-to-service: mTLS and audience-bound tokens; no shared static API keys",
    "ID-4": "Secrets centralized in a vault/KMS; none in client code or prompts",
    "AZ-1": "Roles and permissions as code, reviewed like code",
    "AZ-2": "ABAC for tenant, region, sensitivity; row-level security in the database",
    "AZ-3": "Model tools restricted by role; tool inputs validated against schemas",
    "AZ-4": "Immutable audit trail with prompts, tool calls, outputs; PII redacted",
    "AZ-5": "Encryption at rest with per-tenant keys; field-level encryption",
    "PAY-1": "Card handling delegated to a PSP; SAQ A scope",
    "PAY-2": "Tokenized payment details; 3DS/SCA; velocity limits per customer and card",
    "PAY-3": "Idempotency keys for charges, refunds, webhooks; retries with jitter",
    "PAY-4": "Verified, rotatable webhook secrets; dead-letter queue with alerting",
    "PAY-5": "Double-entry ledger; daily reconciliation with drift flags",
    "AI-1": "Prompt-injection mitigation: allowlists, deny-by-default system prompts, output "
    "schema validation",
    "AI-2": "PII masked before models; DLP; geo pinning",
    "AI-3": "Least-privilege model tokens; per-tenant rate limits and isolation",
    "AI-4": "Red-teaming; human approval for high-risk actions",
    "PLT-1": "dev/stage/prod separation; no test accounts or default credentials in prod",
    "PLT-2": "CI/CD with signed artifacts, SBOM, SAST/DAST, pinned dependencies",
    "PLT-3": "TLS 1.3, HSTS, CSP, strict CORS; WAF and abuse detection",
    "PLT-4": "Backups with RPO/RTO; global AI kill-switch",
    "EX-1": "The reference app: its roles and tools, RLS, idempotent payments, audited tool calls",
    "EX-2": "Tabletop",
}
