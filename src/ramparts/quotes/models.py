"""Tables of the quotes app (created by quotes/migrations/0002_quotes.py, then changed by
the later revisions there)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ramparts.db.base import Base, text_enum
from ramparts.identity import models as _identity_models  # noqa: F401 - tables quotes refer to

__all__ = ["Quote", "QuoteItem", "QuoteStatus", "Sensitivity"]


class QuoteStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class Sensitivity(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class Quote(Base):
    __tablename__ = "quotes"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "buyer_id"], ["users.tenant_id", "users.id"]),
        ForeignKeyConstraint(["tenant_id", "seller_id"], ["users.tenant_id", "users.id"]),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    buyer_id: Mapped[uuid.UUID]
    seller_id: Mapped[uuid.UUID | None]
    title: Mapped[str]
    description: Mapped[str] = mapped_column(server_default="")
    status: Mapped[QuoteStatus] = mapped_column(
        text_enum(QuoteStatus), server_default=QuoteStatus.DRAFT.value
    )
    currency: Mapped[str]
    sensitivity: Mapped[Sensitivity] = mapped_column(
        text_enum(Sensitivity), server_default=Sensitivity.INTERNAL.value
    )
    #: The seller's proposal, sent with the answer (0028_quote_proposal): a vendor's words.
    proposal: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("now()"))


class QuoteItem(Base):
    __tablename__ = "quote_items"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "quote_id"], ["quotes.tenant_id", "quotes.id"]),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    tenant_id: Mapped[uuid.UUID]
    quote_id: Mapped[uuid.UUID]
    position: Mapped[int]
    description: Mapped[str]
    quantity: Mapped[int]
    unit_price_minor: Mapped[int] = mapped_column(BigInteger)
