"""Signing-key rotation: overlap, JWKS, and retirement."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.keys import load_key_ring
from tests.audit.trail import head, recorded
from tests.conftest import libpq
from tests.identity.helpers import OVERLAP, bearer, obtain_tokens, provision, provisioning_for
from tests.identity.test_token_attacks import ATTACKER, parts, resign


def rotate(urls: DatabaseUrls, kms: Kms) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        owner = Database(urls.owner, pool_size=1)
        try:
            return await provisioning_for(owner, kms).rotate_signing_key(overlap=OVERLAP)
        finally:
            await owner.dispose()

    return asyncio.run(run())


def current_key(urls: DatabaseUrls, kms: Kms) -> Any:
    async def run() -> Any:
        owner = Database(urls.owner, pool_size=1)
        try:
            async with owner.session() as session:
                ring = await load_key_ring(session, overlap=OVERLAP)
            return ring.signing_key(kms)
        finally:
            await owner.dispose()

    return asyncio.run(run())


def test_rotation_keeps_the_previous_key_for_the_overlap_then_retires_it(
    make_database: Callable[..., DatabaseUrls],
    kms: Kms,
    serve_app: Callable[..., httpx.Client],
) -> None:
    urls = make_database()
    account = provision(urls, kms)
    server = serve_app(database_urls=urls)
    old = obtain_tokens(server, account)
    old_kid = parts(old["access_token"])[0]["kid"]

    rotated = rotate(urls, kms)
    new_kid = rotated["kid"]
    assert rotated["published"] == sorted([old_kid, new_kid])
    # A token from the new key is accepted at once (the server reloads keys for a new kid),
    new_key = current_key(urls, kms)
    new_token = resign(old["access_token"], new_key, header={"kid": new_key.kid})
    assert parts(new_token)[0]["kid"] == new_kid
    assert server.get("/oauth/userinfo", headers=bearer(new_token)).status_code == 200
    # and during the overlap the old key still verifies and is still published.
    assert server.get("/oauth/userinfo", headers=bearer(old["access_token"])).status_code == 200
    assert {k["kid"] for k in server.get("/oauth/jwks").json()["keys"]} == {old_kid, new_kid}

    # The overlap passes (the new key has been current for longer than a token lives).
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute("UPDATE signing_keys SET activated_at = activated_at - interval '1 hour'")
    time.sleep(1.1)  # the server reloads keys at most once a second on an unknown kid
    unknown = resign(old["access_token"], ATTACKER, header={"kid": "attacker"})
    assert server.get("/oauth/userinfo", headers=bearer(unknown)).status_code == 401
    before = head(urls)
    retired = server.get("/oauth/userinfo", headers=bearer(old["access_token"]))
    assert retired.status_code == 401
    [event] = recorded(urls, None, Action.TOKEN_REJECTED, after=before)
    assert event["details"]["reason"] == "unknown or retired signing key"
    assert [k["kid"] for k in server.get("/oauth/jwks").json()["keys"]] == [new_kid]
    # The next rotation records the retirement.
    third = rotate(urls, kms)
    assert old_kid in third["retired"]
    assert old_kid not in third["published"]
