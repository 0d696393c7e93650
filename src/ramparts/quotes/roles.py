"""The quote app's roles (`QUOTES.roles`). The tenant's administrator is the runtime's own
role (`ramparts.identity.models.ADMIN_ROLE`)."""

from __future__ import annotations

__all__ = ["BUYER", "FINANCE", "ROLES", "SELLER"]

#: Asks for quotes, and accepts or rejects the answers.
BUYER = "buyer"
#: Answers the quotes open to every seller or assigned to them.
SELLER = "seller"
#: Reads every quote; charges deposits, issues refunds, approves disbursements.
FINANCE = "finance"
ROLES = (BUYER, SELLER, FINANCE)
