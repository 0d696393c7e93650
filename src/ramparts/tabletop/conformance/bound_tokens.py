"""ID-3's certificate-bound tokens (RFC 8705), proved on a second `ramparts serve` of the
instance (its code, database and keys) that terminates TLS and asks for client certificates
signed by a throwaway CA: a `tls_client_auth` client registered for the certificate gets a
token whose `cnf.x5t#S256` is that certificate's thumbprint, and the token is refused over a
connection presenting another certificate, or none."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ramparts.identity.mtls import certificate_thumbprint
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.forgery import read_jwt
from ramparts.tabletop.conformance.operating import second_server
from ramparts.tabletop.target import DrillError, Target

__all__ = ["prove_binding"]

_Key = ec.EllipticCurvePrivateKey


def _certificate(
    name: str, key: _Key, issuer: tuple[x509.Name, _Key] | None = None, *, server: bool = False
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    moment = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=1))
        .not_valid_after(moment + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: _Key) -> tuple[str, str]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@contextmanager
def _pki() -> Iterator[tuple[Path, dict[str, tuple[str, str, x509.Certificate]]]]:
    """A throwaway CA (its PEM), and a server and two client certificates it signed."""
    with tempfile.TemporaryDirectory(prefix="ramparts-mtls-") as scratch:
        directory = Path(scratch)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("ramparts drill CA", ca_key)
        ca_path = directory / "ca.pem"
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        files = {}
        for name in ("server", "client-a", "client-b"):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _certificate(name, key, (ca.subject, ca_key), server=name == "server")
            files[name] = (*_write(directory, name, cert, key), cert)
        yield ca_path, files


def _error(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error"))
    except ValueError:
        return "(no JSON)"


def prove_binding(
    f: Findings,
    target: Target,
    *,
    register: Callable[[str], str],
    api: str,
    route: str,
) -> None:
    """`register(thumbprint)` registers a `tls_client_auth` client for the API and returns its
    id (the caller revokes it). Tokens are asked for and used on the second server."""
    with _pki() as (ca_path, files):
        der = files["client-a"][2].public_bytes(serialization.Encoding.DER)
        thumbprint = certificate_thumbprint(der)
        client_id = register(thumbprint)
        trust = ssl.create_default_context(cafile=str(ca_path))
        server_cert, server_key, _ = files["server"]
        arguments = (
            *("--tls-cert", server_cert, "--tls-key", server_key),
            *("--tls-client-ca", str(ca_path)),
        )

        def as_client(base: str, name: str | None) -> httpx.Client:
            context = ssl.create_default_context(cafile=str(ca_path))
            if name is not None:
                context.load_cert_chain(files[name][0], files[name][1])
            # The instance answers only under its public URL's host: so does its second server.
            host = {"Host": urlsplit(target.base_url).netloc}
            return httpx.Client(base_url=base, verify=context, timeout=30, headers=host)

        request = {"grant_type": "client_credentials", "client_id": client_id, "resource": api}
        with (
            second_server(target, {}, arguments=arguments, ready=trust) as base,
            as_client(base, "client-a") as a,
            as_client(base, "client-b") as b,
            as_client(base, None) as anonymous,
        ):
            other_cert = b.post("/oauth/token", data=request)
            no_cert = anonymous.post("/oauth/token", data=request)
            issued = a.post("/oauth/token", data=request)
            if issued.status_code != 200:
                raise DrillError(
                    f"the mTLS client's token was refused ({issued.status_code} "
                    f"{issued.text[:200]})"
                )
            token = str(issued.json()["access_token"])
            cnf = read_jwt(token)[1].get("cnf") or {}
            bearer = {"Authorization": f"Bearer {token}"}
            statuses = [c.get(route, headers=bearer).status_code for c in (a, b, anonymous)]
    f.saw(
        "a second server of the instance over TLS asking for client certificates of a "
        "throwaway CA; a tls_client_auth client registered for certificate A"
    )
    refusals = [(r.status_code, _error(r)) for r in (other_cert, no_cert)]
    f.expect(
        all(r == (401, "invalid_client") for r in refusals),
        f"its token requested with certificate B → {' '.join(map(str, refusals[0]))}, with "
        f"none → {' '.join(map(str, refusals[1]))}",
        "a token was issued to a connection without the client's certificate",
    )
    f.expect(
        cnf.get("x5t#S256") == thumbprint,
        f"with certificate A → 200, a token with cnf.x5t#S256 {cnf.get('x5t#S256')} "
        "(certificate A's thumbprint)",
        f"the token's cnf {cnf} is not bound to the client's certificate",
    )
    with_a, with_b, with_none = statuses
    f.expect(
        with_a != 401 and with_b == 401 and with_none == 401,
        f"GET {route} with the bound token: over certificate A → {with_a}, over B → {with_b}, "
        f"over no certificate → {with_none}",
        "a certificate-bound token was accepted without its certificate",
    )
