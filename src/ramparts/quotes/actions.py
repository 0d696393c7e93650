"""The quote app's Cedar actions (namespace `Quotes`, see `policy/schema.cedarschema`)."""

from __future__ import annotations

from ramparts.policy.engine import PolicyAction

__all__ = ["NAMESPACE", "QuoteAction"]

NAMESPACE = "Quotes"


class QuoteAction:
    """Every action a quote route or tool asks for."""

    QUOTE_LIST = PolicyAction("quote.list", "Quote", NAMESPACE)
    QUOTE_READ = PolicyAction("quote.read", "Quote", NAMESPACE)
    QUOTE_CREATE = PolicyAction("quote.create", "Quote", NAMESPACE)
    QUOTE_UPDATE = PolicyAction("quote.update", "Quote", NAMESPACE)
    QUOTE_DELETE = PolicyAction("quote.delete", "Quote", NAMESPACE)
    QUOTE_SUBMIT = PolicyAction("quote.submit", "Quote", NAMESPACE)
    QUOTE_ACCEPT = PolicyAction("quote.accept", "Quote", NAMESPACE)
    DEPOSIT_CHARGE = PolicyAction("deposit.charge", "Deposit", NAMESPACE)
    REFUND_ISSUE = PolicyAction("refund.issue", "Refund", NAMESPACE)
    DISBURSEMENT_APPROVE = PolicyAction("disbursement.approve", "Disbursement", NAMESPACE)
    # A quote's payments (its deposit): Finance reads them all, the payer their own, and only
    # the payer pays (on the PSP's page; not a money action: no Finance role moves it).
    PAYMENT_LIST = PolicyAction("payment.list", "Payment", NAMESPACE)
    PAYMENT_READ = PolicyAction("payment.read", "Payment", NAMESPACE)
    PAYMENT_PAY = PolicyAction("payment.pay", "Payment", NAMESPACE)
    # The tenant's books as Finance reads them: its ledger entries, and what the daily
    # reconciliation runs found about its own entries (reading moves nothing).
    LEDGER_READ = PolicyAction("ledger.read", "Ledger", NAMESPACE)
    RECONCILIATION_READ = PolicyAction("reconciliation.read", "Reconciliation", NAMESPACE)
    ALL = (
        QUOTE_LIST,
        QUOTE_READ,
        QUOTE_CREATE,
        QUOTE_UPDATE,
        QUOTE_DELETE,
        QUOTE_SUBMIT,
        QUOTE_ACCEPT,
        DEPOSIT_CHARGE,
        REFUND_ISSUE,
        DISBURSEMENT_APPROVE,
        PAYMENT_LIST,
        PAYMENT_READ,
        PAYMENT_PAY,
        LEDGER_READ,
        RECONCILIATION_READ,
    )
    MONEY = (DEPOSIT_CHARGE, REFUND_ISSUE, DISBURSEMENT_APPROVE)
