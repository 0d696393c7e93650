"""What seals and opens the app's encrypted column in a served app.

The runtime seals with `SealedFields` over the tenant data keys its KMS wraps, but hands an app
neither (`AppServices` has no `fields`; `App.tools` gets the registry only). Until it does, a
served app opens the same KMS the server opens, from the same settings (`RAMPARTS_KMS_*`,
`RAMPARTS_HOME`), once per process, when it first seals or opens a field: the same tenant
keys, so key rotation and re-encryption cover the column (`App.encrypted_columns`). A server
built with another KMS than its settings name (tests do) must pass its own instead: tests and
benchmarks build the routes and tools with theirs (`views.build_router`, `expense_tools`).
"""

from __future__ import annotations

import functools

from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.sealing import SealedFields

__all__ = ["runtime_fields"]


@functools.cache
def runtime_fields() -> SealedFields:
    return SealedFields(DataKeys(open_kms(load_settings())))
