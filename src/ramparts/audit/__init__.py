"""The hash-chained, append-only audit trail with redaction, signed checkpoints and
verification (control AZ-4). Lands with the audit issue."""
