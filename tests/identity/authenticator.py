"""A software WebAuthn authenticator (soft-webauthn) that speaks the JSON our pages send.

soft-webauthn never sets the user-verified flag; `user_verified=True` makes this one behave
like a passkey with a PIN or biometric, which Ramparts requires.
"""

from __future__ import annotations

import base64
import json
from struct import pack
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from fido2.utils import sha256
from soft_webauthn import SoftWebauthnDevice

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator(SoftWebauthnDevice):  # type: ignore[misc]
    def __init__(self, *, user_verified: bool = True) -> None:
        super().__init__()
        self.flags = UP | (UV if user_verified else 0)

    def register(self, options_json: str, origin: str) -> dict[str, Any]:
        options = json.loads(options_json)
        self.cred_init(options["rp"]["id"], unb64url(options["user"]["id"]))
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": options["challenge"], "origin": origin}
        ).encode()
        cose_key = cbor.encode(ES256.from_cryptography_key(self.private_key.public_key()))
        auth_data = (
            sha256(self.rp_id.encode())
            + bytes([self.flags | AT])
            + pack(">I", self.sign_count)
            + self.aaguid
            + pack(">H", len(self.credential_id))
            + self.credential_id
            + cose_key
        )
        attestation = cbor.encode({"authData": auth_data, "fmt": "none", "attStmt": {}})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
            },
        }

    def sign_in(self, options_json: str, origin: str) -> dict[str, Any]:
        options = json.loads(options_json)
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials", [])}
        assert self.credential_id in allowed, "the server did not offer our credential"
        self.sign_count += 1
        client_data = json.dumps(
            {"type": "webauthn.get", "challenge": options["challenge"], "origin": origin}
        ).encode()
        auth_data = (
            sha256(options["rpId"].encode()) + bytes([self.flags]) + pack(">I", self.sign_count)
        )
        signature = self.private_key.sign(
            auth_data + sha256(client_data), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64url(auth_data),
                "clientDataJSON": b64url(client_data),
                "signature": b64url(signature),
                "userHandle": b64url(self.user_handle),
            },
        }
