"""The expenses table as the app reads and writes it (created by
migrations/expenses_0001_claims.py), and its one encrypted column.

Its own `MetaData`: the runtime's models never see the app's tables."""

from __future__ import annotations

from enum import StrEnum

from ramparts.crypto.sealing import EncryptedColumn, SealedColumn
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, Uuid

__all__ = ["EXPENSES", "PAYEE_IBAN", "ExpenseStatus", "Sensitivity"]


class ExpenseStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REIMBURSED = "reimbursed"


class Sensitivity(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


METADATA = MetaData()
EXPENSES = Table(
    "expenses",
    METADATA,
    Column("id", Uuid, primary_key=True),
    Column("tenant_id", Uuid, nullable=False),
    Column("employee_id", Uuid, nullable=False),
    Column("description", Text, nullable=False),
    Column("receipt_text", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("sealed_payee_iban", SealedColumn(), nullable=False),
    Column("status", Text, nullable=False),
    Column("sensitivity", Text, nullable=False),
    Column("approved_by", Uuid),
    Column("approved_at", DateTime(timezone=True)),
    Column("reimbursed_by", Uuid),
    Column("reimbursed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: The account a claim is reimbursed to: personal data, sealed under the tenant's data key,
#: bound to its row by id (a sealed IBAN copied to another claim does not open there).
PAYEE_IBAN = EncryptedColumn("expenses", "sealed_payee_iban", row="id")
