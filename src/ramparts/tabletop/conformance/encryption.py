"""AZ-5, encryption at rest: every column of the `sealed_field` type holds sealed fields only
(read raw by the owner: version, nonce, AES-256-GCM ciphertext and tag), no value the drill
knows in clear (each person's TOTP secret); each tenant has data keys of its own, wrapped by
a KMS key of its own; and the AAD binds a field to its row and tenant: a person's sealed
secret swapped for another row's, or another tenant's, does not open through the sign-in,
and works again once put back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pyotp
from psycopg import sql

from ramparts.crypto.fields import BODY_START
from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.people import other_tenant, spare_people, tenant_id
from ramparts.tabletop.conformance.signin import Browser, code_in
from ramparts.tabletop.target import DrillError, Target

__all__ = ["check"]

#: Where a person's TOTP secret is kept, sealed (the runtime's own encrypted column).
TOTP_TABLE, TOTP_COLUMN = "totp_credentials", "sealed_secret"
GCM_TAG = 16


def check(target: Target) -> Outcome:
    home = target.tenants()[0]
    away = other_tenant(target, home)
    f = Findings(
        "encrypted columns hold sealed fields only, no known value in clear; each tenant has "
        "its own data keys wrapped by its own KMS key; a sealed field moved to another row or "
        "tenant does not open through the API"
    )
    if target.urls is None:
        raise DrillError("the instance's database is not reachable: what is stored at rest")
    tenants = {slug: tenant_id(target, slug) for slug in target.tenants()}
    _columns(f, target, list(tenants.values()))
    _known_values(f, target, tenants)
    _data_keys(f, target, tenants)
    _bound(f, target, home, away)
    f.saw("key rotation and crypto-shredding are not exercised live (they need the KMS)")
    return f.outcome(
        "sealed columns hold ciphertext only; per-tenant data keys under per-tenant KMS keys; "
        "a secret swapped to another row or tenant did not open, and opened again put back"
    )


def _sealed_columns(db: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND domain_name = 'sealed_field' "
        "ORDER BY table_name, column_name"
    ).fetchall()
    return [(str(t), str(c)) for t, c in rows]


def _columns(f: Findings, target: Target, tenants: list[str]) -> None:
    counts: dict[str, tuple[int, int]] = {}
    with target.owner() as db:
        columns = _sealed_columns(db)
        for table, column in columns:
            query = sql.SQL(
                "SELECT count({c}), count(*) FILTER (WHERE get_byte({c}, 0) <> 0 "
                "OR ramparts_sealed_version({c}) < 1) FROM {t} WHERE tenant_id = %s"
            ).format(c=sql.Identifier(column), t=sql.Identifier(table))
            total = odd = 0
            for tenant in tenants:
                with rolled_back(db):
                    as_tenant(db, tenant)
                    row = db.execute(query, (tenant,)).fetchone()
                total, odd = total + (row[0] if row else 0), odd + (row[1] if row else 0)
            counts[f"{table}.{column}"] = (total, odd)
    f.expect(
        bool(columns) and not any(odd for _, odd in counts.values()),
        f"{len(columns)} encrypted columns: "
        + ", ".join(f"{name} {total} sealed" for name, (total, _) in counts.items()),
        "a value of an encrypted column is not a sealed field",
    )


def _known_values(f: Findings, target: Target, tenants: dict[str, str]) -> None:
    """Each person's TOTP secret: sealed in its row, its length that of AES-GCM over it."""
    found, shaped, people = 0, 0, 0
    with target.owner() as db:
        columns = _sealed_columns(db)
        for user in target.report.get("users", []):
            secret = str(user["totp_secret"]).encode()
            with rolled_back(db):
                as_tenant(db, tenants[str(user["tenant"])])
                row = db.execute(
                    "SELECT octet_length(c.sealed_secret) FROM totp_credentials c JOIN users u "
                    "ON u.tenant_id = c.tenant_id AND u.id = c.user_id WHERE u.username = %s",
                    (user["username"],),
                ).fetchone()
                for table, column in columns:
                    query = sql.SQL("SELECT count(*) FROM {} WHERE position(%s IN {}) > 0").format(
                        sql.Identifier(table), sql.Identifier(column)
                    )
                    hit = db.execute(query, (secret,)).fetchone()
                    found += int(hit[0]) if hit else 0
            people += 1
            shaped += int(row is not None and row[0] == BODY_START + len(secret) + GCM_TAG)
    f.expect(
        found == 0 and shaped == people,
        f"{people} people's TOTP secrets: each sealed as version + nonce + ciphertext + "
        f"{GCM_TAG}-byte tag ({shaped} of {people}), none found in clear in any encrypted column",
        f"{found} encrypted values hold a known secret in clear"
        if found
        else "a TOTP secret is not stored as a sealed field",
    )


def _data_keys(f: Findings, target: Target, tenants: dict[str, str]) -> None:
    keys: dict[str, list[tuple[str, bytes]]] = {}
    with target.owner() as db:
        for slug, tenant in tenants.items():
            with rolled_back(db):
                as_tenant(db, tenant)
                keys[slug] = [
                    (str(kms_key), bytes(wrapped))
                    for kms_key, wrapped in db.execute(
                        "SELECT kms_key, wrapped FROM tenant_data_keys WHERE tenant_id = %s",
                        (tenant,),
                    )
                ]
    kms_keys = {slug: {k.rsplit(":", 1)[0] for k, _ in found} for slug, found in keys.items()}
    blobs = [blob for found in keys.values() for _, blob in found]
    shared = [(a, b) for a in kms_keys for b in kms_keys if a < b and kms_keys[a] & kms_keys[b]]
    f.expect(
        all(keys.values())
        and not shared
        and len(set(blobs)) == len(blobs)
        and all(blob.startswith(k.encode() + b":") for found in keys.values() for k, blob in found),
        "data keys per tenant: "
        + ", ".join(
            f"{slug} {len(found)} under {sorted(kms_keys[slug])}" for slug, found in keys.items()
        )
        + "; every one wrapped by its KMS key, no two alike",
        "a tenant lacks data keys of its own, or shares a KMS key with another",
    )


@contextmanager
def _swapped(target: Target, tenant: str, person: str, sealed: bytes) -> Iterator[None]:
    """`person`'s sealed TOTP secret replaced by `sealed` for the block, then put back."""
    update = (
        "UPDATE totp_credentials c SET sealed_secret = %s FROM users u WHERE u.tenant_id = "
        "c.tenant_id AND u.id = c.user_id AND c.tenant_id = %s AND u.username = %s"
    )
    with target.owner() as db:
        with rolled_back(db):
            as_tenant(db, tenant)
            original = _sealed_of(db, person)
        with db.transaction():
            as_tenant(db, tenant)
            db.execute(update, (sealed, tenant, person))
        try:
            yield
        finally:
            with db.transaction():
                as_tenant(db, tenant)
                db.execute(update, (original, tenant, person))


def _sealed_of(db: psycopg.Connection[Any], person: str) -> bytes:
    row = db.execute(
        "SELECT c.sealed_secret FROM totp_credentials c JOIN users u ON u.tenant_id = "
        "c.tenant_id AND u.id = c.user_id WHERE u.username = %s",
        (person,),
    ).fetchone()
    if row is None:
        raise DrillError(f"{person} has no TOTP secret stored")
    return bytes(row[0])


def _unused_step(target: Target, person: str) -> int:
    """A TOTP step the instance still accepts from `person`: now, or the next one (one step of
    drift is accepted) when now is used."""
    step = max(int(time.time()) // 30, target.used_step(person) + 1)
    while step > int(time.time()) // 30 + 1:
        time.sleep(1)
    return step


def _bound(f: Findings, target: Target, home: str, away: str) -> None:
    """The sign-in opens a person's sealed TOTP secret: with another row's or tenant's in its
    place, the other person's own code must not get in (without the AAD it would)."""
    person, *others = spare_people(target, home)
    neighbour = (
        others[0]
        if others
        else next(
            u["username"]
            for u in target.report["users"]
            if u["tenant"] == home and u["username"] != person
        )
    )
    stranger = spare_people(target, away)[0]
    for label, owner, tenant_of_owner in (
        ("another row of the tenant", neighbour, home),
        ("another tenant's row", stranger, away),
    ):
        with target.owner() as db, rolled_back(db):
            as_tenant(db, tenant_id(target, tenant_of_owner))
            sealed = _sealed_of(db, owner)
        with _swapped(target, tenant_id(target, home), person, sealed):
            # The other person's code, at a step the person has not used: a used one would be
            # refused as a replay, whatever the AAD.
            code = pyotp.TOTP(str(target.user(owner)["totp_secret"])).at(
                30 * _unused_step(target, person)
            )
            with Browser(target, own_address=True) as browser:
                answer = browser.sign_in(person, code)
        f.expect(
            code_in(answer) is None,
            f"{person}'s sealed secret replaced by {label}'s ({owner}): signing in with "
            f"{owner}'s code → {answer.status_code}, no code",
            f"a sealed field copied from {label} opened: the AAD does not bind it",
        )
    with Browser(target, own_address=True) as browser:
        answer = browser.sign_in(person, target.code_for(person))
    f.expect(
        code_in(answer) is not None,
        f"put back: {person} signs in with their own code → {answer.status_code}",
        f"{person} cannot sign in after their sealed secret was put back",
    )
