"""PSP port (sandbox, Stripe), idempotency, webhooks, job queue and DLQ, ledger, reconciliation
(controls PAY-1..PAY-5). Lands with the payments issue."""
