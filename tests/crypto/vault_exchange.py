"""A recorded exchange with a Vault older than 1.13, for what a real OpenBao server cannot show
(everything else runs against one, `tests.crypto.bao`):

- Such a Vault ignores Transit's `associated_data` and only warns, so a wrap would not be bound
  to its context; the backend must refuse to wrap there. Current servers honour the field.
- The AppRole login carries no token, even with VAULT_TOKEN or ~/.vault-token set: a real
  server accepts a login either way, so only the recorded request shows which header arrived.

Request and response shapes follow Vault's API documentation; every value is a fake made for
this file. The replay server in test_kms.py checks each request (method, path, token header,
JSON body) against it."""

from __future__ import annotations

import base64
from typing import Any

TOKEN = "hvs.CAESIGrecordedreplaytokenforthetestsonly"  # pragma: allowlist secret
AMBIENT_TOKEN = "hvs.CAESIGambientdevelopertokennottobesent"  # pragma: allowlist secret
ROLE_ID = "5e0c9b3a-7f61-4a0e-9d2b-recorded-role"  # pragma: allowlist secret
SECRET_ID = "b8f1e2d3-recorded-secret-id-for-replay"  # pragma: allowlist secret
KEY = "ramparts-system"
CONTEXT = "audit-key:recorded"
PLAINTEXT = base64.b64encode(bytes(range(32))).decode()
CIPHERTEXT = "vault:v1:" + base64.b64encode(bytes(i * 37 % 256 for i in range(60))).decode()

EXCHANGE: list[dict[str, Any]] = [
    {
        "request": {
            "method": "POST",
            "path": "/v1/auth/approle/login",
            "token": None,
            "json": {"role_id": ROLE_ID, "secret_id": SECRET_ID},
        },
        "response": {
            "status": 200,
            "json": {
                "auth": {
                    "client_token": TOKEN,
                    "policies": ["default", "ramparts"],
                    "lease_duration": 1200,
                    "renewable": True,
                }
            },
        },
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/keys/{KEY}",
            "token": TOKEN,
            "json": {"type": "aes256-gcm96"},
        },
        "response": {"status": 204},
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/encrypt/{KEY}",
            "token": TOKEN,
            "json": {
                "plaintext": PLAINTEXT,
                "associated_data": base64.b64encode(CONTEXT.encode()).decode(),
            },
        },
        "response": {
            "status": 200,
            "json": {
                "data": {"ciphertext": CIPHERTEXT},
                "warnings": ["Endpoint ignored these unrecognized parameters: [associated_data]"],
            },
        },
    },
]
