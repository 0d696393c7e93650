"""Mutual TLS (RFC 8705): the client certificate of the connection, as the ASGI TLS extension
carries it, and the thumbprint that binds tokens to it."""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Mapping
from typing import Any

__all__ = ["certificate_thumbprint", "client_certificate_thumbprint"]


def certificate_thumbprint(der: bytes) -> str:
    """x5t#S256: base64url SHA-256 of the DER certificate (RFC 8705 section 3.1)."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def client_certificate_thumbprint(scope: Mapping[str, Any]) -> str | None:
    """The thumbprint of the verified client certificate on this connection, if any."""
    tls = scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    return certificate_thumbprint(ssl.PEM_cert_to_DER_cert(chain[0]))
