"""The audit trail (control AZ-4): per-tenant hash chains, append-only in PostgreSQL,
redacted before writing, with signed checkpoints, verification and export.

`AuditLog.record(session, actor, action, resource, decision, details)` queues; `Sequencer`
chains what is queued; `Checkpointer` signs; `verify.verify_chain` and `ramparts audit
verify` check.
"""
