"""Which tenant a PSP object belongs to: the runtime says so when it creates the object.

Every object the runtime creates at the PSP (PaymentIntents, refunds, customers) carries
`metadata = tenant_metadata(tenant)`, set by the runtime's own API calls, which only it can
make (the API key is in the KMS). The PSP copies an object's metadata into every event about
it, and the event's signature proves the PSP sent it: so the tenant read back from a verified
event is the one the runtime wrote, never one the caller of the webhook chose.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["TENANT_METADATA_KEY", "tenant_metadata", "tenant_of"]

TENANT_METADATA_KEY = "ramparts_tenant"


def tenant_metadata(tenant_id: uuid.UUID) -> dict[str, str]:
    """The metadata to put on every object the runtime creates at the PSP for `tenant_id`."""
    return {TENANT_METADATA_KEY: str(tenant_id)}


def tenant_of(psp_object: Any) -> uuid.UUID | None:
    """The tenant the runtime wrote on `psp_object` (an event's `data.object`), or None when
    there is none or it is not a UUID in its canonical form."""
    metadata = psp_object.get("metadata") if isinstance(psp_object, dict) else None
    value = metadata.get(TENANT_METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(value, str):
        return None
    try:
        tenant = uuid.UUID(value)
    except ValueError:
        return None
    return tenant if str(tenant) == value else None
