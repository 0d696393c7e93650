"""The AI tool gateway (AZ-3, AI-1..AI-4): a public tool registry, schema validation, Cedar
re-authorization, provenance, approvals, PII masking and DLP, region pinning, limits, the
kill-switch and model adapters. The threat model is in docs/ai-gateway.md."""
