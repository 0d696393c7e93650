"""The AI tool gateway: registry, schemas, re-authorization, provenance, approvals, PII masking,
region pinning, rate limits, kill-switch, model adapters (AZ-3, AI-1..AI-4).

Lands with the AI tool gateway issue.
"""
