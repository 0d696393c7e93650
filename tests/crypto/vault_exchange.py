"""A recorded exchange between the Vault KMS backend and Vault's HTTP API: AppRole login,
Transit key create / encrypt / decrypt / rotate / read / config / delete, KV v2 write, read and
a missing path, in the request and response shapes of Vault's API documentation. The replay
server in test_kms.py checks each request (method, path, token header, JSON body) against it.
Every value is a fake made for this file."""

from __future__ import annotations

import base64
from typing import Any


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


RENEWED_TOKEN = "hvs.CAESIGrenewedreplaytokenafterexpiry"  # pragma: allowlist secret
TOKEN = "hvs.CAESIGrecordedreplaytokenforthetestsonly"  # pragma: allowlist secret
ROLE_ID = "5e0c9b3a-7f61-4a0e-9d2b-recorded-role"  # pragma: allowlist secret
SECRET_ID = "b8f1e2d3-recorded-secret-id-for-replay"  # pragma: allowlist secret
SECRET = "sk_test_recorded_replay_value"  # pragma: allowlist secret
TENANT_KEY = "tenant-6f1c2a4e8d3b4f5a9c7e1b2d3e4f5a6b"
KEY = f"ramparts-{TENANT_KEY}"
CONTEXT = "tenant-data-key:6f1c2a4e-8d3b-4f5a-9c7e-1b2d3e4f5a6b:data:1"
PLAINTEXT = base64.b64encode(bytes(range(32))).decode()
CIPHERTEXT = "vault:v1:" + base64.b64encode(bytes(i * 37 % 256 for i in range(60))).decode()


def key_info(latest: int) -> dict[str, Any]:
    """Transit's answer about KEY (create, rotate, read, config) at its `latest` version."""
    return {
        "status": 200,
        "json": {
            "data": {
                "name": KEY,
                "type": "aes256-gcm96",
                "latest_version": latest,
                "min_decryption_version": 1,
                "min_encryption_version": 0,
                "deletion_allowed": False,
                "exportable": False,
                "supports_encryption": True,
                "supports_decryption": True,
                "keys": {str(v): 1764400000 + v for v in range(1, latest + 1)},
            }
        },
    }


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
                "request_id": "1",
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": None,
                "auth": {
                    "client_token": TOKEN,
                    "accessor": "recorded-accessor",
                    "policies": ["default", "ramparts"],
                    "token_policies": ["default", "ramparts"],
                    "metadata": {"role_name": "ramparts"},
                    "lease_duration": 1200,
                    "renewable": True,
                    "entity_id": "recorded-entity",
                    "token_type": "service",
                    "orphan": True,
                },
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
        "response": key_info(1),
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/encrypt/{KEY}",
            "token": TOKEN,
            "json": {"plaintext": PLAINTEXT, "associated_data": b64(CONTEXT)},
        },
        "response": {"status": 200, "json": {"data": {"ciphertext": CIPHERTEXT, "key_version": 1}}},
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/decrypt/{KEY}",
            "token": TOKEN,
            "json": {"ciphertext": CIPHERTEXT, "associated_data": b64(CONTEXT)},
        },
        "response": {"status": 200, "json": {"data": {"plaintext": PLAINTEXT}}},
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/keys/{KEY}/rotate",
            "token": TOKEN,
            "json": None,
        },
        "response": key_info(2),
    },
    {
        "request": {
            "method": "GET",
            "path": f"/v1/transit/keys/{KEY}",
            "token": TOKEN,
            "json": None,
        },
        "response": key_info(2),
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/decrypt/{KEY}",
            "token": TOKEN,
            "json": {"ciphertext": CIPHERTEXT, "associated_data": b64("another context")},
        },
        "response": {"status": 400, "json": {"errors": ["cipher: message authentication failed"]}},
    },
    {
        "request": {
            "method": "POST",
            "path": "/v1/secret/data/ramparts/psp/stripe-api-key",
            "token": TOKEN,
            "json": {"options": {}, "data": {"value": SECRET}},
        },
        "response": {
            "status": 200,
            "json": {
                "data": {
                    "created_time": "2026-11-29T06:00:00Z",
                    "custom_metadata": None,
                    "deletion_time": "",
                    "destroyed": False,
                    "version": 1,
                }
            },
        },
    },
    {
        "request": {
            "method": "GET",
            "path": "/v1/secret/data/ramparts/psp/stripe-api-key",
            "token": TOKEN,
            "json": None,
        },
        "response": {
            "status": 200,
            "json": {
                "data": {
                    "data": {"value": SECRET},
                    "metadata": {
                        "created_time": "2026-11-29T06:00:00Z",
                        "custom_metadata": None,
                        "deletion_time": "",
                        "destroyed": False,
                        "version": 1,
                    },
                }
            },
        },
    },
    {
        "request": {
            "method": "GET",
            "path": "/v1/secret/data/ramparts/model/missing",
            "token": TOKEN,
            "json": None,
        },
        "response": {"status": 404, "json": {"errors": []}},
    },
    {
        "request": {
            "method": "GET",
            "path": f"/v1/transit/keys/{KEY}",
            "token": TOKEN,
            "json": None,
        },
        "response": key_info(2),
    },
    {
        "request": {
            "method": "POST",
            "path": f"/v1/transit/keys/{KEY}/config",
            "token": TOKEN,
            "json": {"deletion_allowed": True},
        },
        "response": key_info(2),
    },
    {
        "request": {
            "method": "DELETE",
            "path": f"/v1/transit/keys/{KEY}",
            "token": TOKEN,
            "json": None,
        },
        "response": {"status": 204},
    },
    # Create-only write of a secret that exists: Vault's check-and-set refuses it.
    {
        "request": {
            "method": "POST",
            "path": "/v1/secret/data/ramparts/psp/stripe-api-key",
            "token": TOKEN,
            "json": {"options": {"cas": 0}, "data": {"value": SECRET}},
        },
        "response": {
            "status": 400,
            "json": {"errors": ["check-and-set parameter did not match the current version"]},
        },
    },
    # The token expires: denied, one fresh AppRole login, the same request again.
    {
        "request": {
            "method": "GET",
            "path": "/v1/secret/data/ramparts/psp/stripe-api-key",
            "token": TOKEN,
            "json": None,
        },
        "response": {"status": 403, "json": {"errors": ["permission denied"]}},
    },
    {
        "request": {
            "method": "POST",
            "path": "/v1/auth/approle/login",
            "token": TOKEN,
            "json": {"role_id": ROLE_ID, "secret_id": SECRET_ID},
        },
        "response": {
            "status": 200,
            "json": {
                "auth": {"client_token": RENEWED_TOKEN, "lease_duration": 1200, "renewable": True}
            },
        },
    },
    {
        "request": {
            "method": "GET",
            "path": "/v1/secret/data/ramparts/psp/stripe-api-key",
            "token": RENEWED_TOKEN,
            "json": None,
        },
        "response": {
            "status": 200,
            "json": {"data": {"data": {"value": SECRET}, "metadata": {"version": 1}}},
        },
    },
]
