"""mTLS service clients (RFC 8705): tls_client_auth and certificate-bound access tokens, over a
real TLS 1.3 server (`ramparts serve --tls-client-ca`)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.mtls import certificate_thumbprint
from tests.certs import certificate, write_pem
from tests.conftest import cli_kms, free_port
from tests.identity.helpers import bearer, provisioning_for
from tests.test_cli import owner_env, run, running


def test_certificate_bound_service_token(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    files = {}
    for name, dns in (("server", "localhost"), ("client-a", None), ("client-b", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(name, key, issuer, dns=dns)
        files[name] = (*map(str, write_pem(tmp_path, name, cert, key)), cert)
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    urls = make_database(migrate=False)
    port = free_port()
    base = f"https://localhost:{port}"
    env = owner_env(tmp_path, urls, RAMPARTS_PUBLIC_URL=base)
    assert run("migrate", env=env).returncode == 0  # schema + a key sealed under this home

    async def register() -> str:
        owner = Database(urls.owner, pool_size=1)
        try:
            provisioning = provisioning_for(owner, cli_kms(tmp_path))
            tenant = await provisioning.ensure_tenant(slug="mtls", name="mTLS", region="eu")
            der = files["client-a"][2].public_bytes(serialization.Encoding.DER)
            return await provisioning.create_service_client(
                tenant,
                name="ledger-sync",
                resources=[f"{base}/api"],
                roles=["service"],
                certificate_thumbprint=certificate_thumbprint(der),
            )
        finally:
            await owner.dispose()

    client_id = asyncio.run(register())
    trust = ssl.create_default_context(cafile=str(ca_path))

    def as_client(name: str | None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(ca_path))
        if name:
            context.load_cert_chain(files[name][0], files[name][1])
        return httpx.Client(base_url=base, verify=context)

    server_cert, server_key, _ = files["server"]
    with running(
        "serve",
        "--port",
        str(port),
        "--tls-cert",
        server_cert,
        "--tls-key",
        server_key,
        "--tls-client-ca",
        str(ca_path),
        env=env,
        url=f"{base}/healthz",
        verify=trust,
    ):
        request = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "resource": f"{base}/api",
        }
        with as_client("client-a") as a, as_client("client-b") as b, as_client(None) as anon:
            assert b.post("/oauth/token", data=request).json()["error"] == "invalid_client"
            assert anon.post("/oauth/token", data=request).status_code == 401
            issued = a.post("/oauth/token", data=request)
            assert issued.status_code == 200, issued.text
            token = issued.json()["access_token"]
            claims = pyjwt.decode(token, options={"verify_signature": False})
            der_a = files["client-a"][2].public_bytes(serialization.Encoding.DER)
            assert claims["cnf"] == {"x5t#S256": certificate_thumbprint(der_a)}
            assert claims["aud"] == f"{base}/api"
            # 403: authenticated as a service (userinfo is for people). 401: not authenticated.
            assert a.get("/oauth/userinfo", headers=bearer(token)).status_code == 403
            assert b.get("/oauth/userinfo", headers=bearer(token)).status_code == 401
            assert anon.get("/oauth/userinfo", headers=bearer(token)).status_code == 401
