"""TLS for `ramparts serve`: TLS 1.3 only, and the client certificate handed to the app.

Uvicorn does not pass the peer certificate to ASGI apps, so a thin protocol subclass adds the
ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`) on each connection; the
identity layer reads it for RFC 8705 client authentication and certificate-bound tokens.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ClientCertificateProtocol", "Tls13ContextFactory"]


@dataclass(frozen=True)
class Tls13ContextFactory:
    """Uvicorn's `ssl_context_factory`: TLS 1.3 only, client certificates optional when a CA
    is given. A plain object rather than a closure, so it reaches every worker process
    (uvicorn pickles its configuration into them)."""

    client_ca: str | None = None

    def __call__(self, _: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = default()
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.client_ca is not None:
            # Optional: browsers connect without one; services present theirs (mTLS).
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context


class ClientCertificateProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, plus the peer certificate of a TLS connection."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.app = _with_client_certificate(self.app, ssl.DER_cert_to_PEM_cert(der))


def _with_client_certificate(app: ASGIApp, pem: str) -> Any:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        extensions["tls"] = {"client_cert_chain": [pem], "tls_version": 0x0304}
        await app(scope, receive, send)

    return wrapped
