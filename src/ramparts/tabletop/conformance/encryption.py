"""AZ-5, encryption at rest: every column of the `sealed_field` type holds sealed fields only
(read raw by the owner: version, nonce, AES-256-GCM ciphertext and tag), no value the drill
knows in clear (each person's TOTP secret); each tenant has data keys of its own, wrapped by
a KMS key of its own; and the AAD binds a field to its row and tenant: a person's sealed
secret swapped for another row's, or another tenant's, does not open through the sign-in,
and works again once put back.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import psycopg
import pyotp
from psycopg import sql

from ramparts.crypto.fields import BODY_START, DataKey, FieldCipher
from ramparts.crypto.kms import Kms
from ramparts.tabletop.conformance import throwaway
from ramparts.tabletop.conformance.catalog import as_tenant, rolled_back
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.operating import (
    operator_command,
    operator_module,
    redacted_tail,
)
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
        "tenant does not open through the API (a refused sign-in, never a 5xx); a tenant's "
        "data key rotates (`keys rotate --tenant`) and its fields still open; deleting a "
        "tenant (`tenants delete`) crypto-shreds its sealed data"
    )
    if target.urls is None:
        raise DrillError("the instance's database is not reachable: what is stored at rest")
    tenants = {slug: tenant_id(target, slug) for slug in target.tenants()}
    _columns(f, target, list(tenants.values()))
    _known_values(f, target, tenants)
    _data_keys(f, target, tenants)
    person = _bound(f, target, home, away)
    if target.operator is None or not target.environment:
        f.unproven("data-key rotation and crypto-shredding (the drill is not the operator)")
    else:
        _rotated(f, target, home, person)
        _shredded(f, target, target.operator.kms)
    return f.outcome(
        "sealed columns hold ciphertext only; per-tenant data keys under per-tenant KMS keys; "
        "a secret swapped to another row or tenant was refused at sign-in, and opened again "
        "put back; a rotated data key re-sealed the tenant's fields, which still open; a "
        "deleted tenant's sealed data no longer opens"
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
            swapped = db.execute(update, (sealed, tenant, person)).rowcount
        if swapped != 1:
            raise DrillError(f"the swap of {person}'s sealed secret changed {swapped} rows")
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


def _bound(f: Findings, target: Target, home: str, away: str) -> str:
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
            code_in(answer) is None and answer.status_code < HTTPStatus.INTERNAL_SERVER_ERROR,
            f"{person}'s sealed secret replaced by {label}'s ({owner}): signing in with "
            f"{owner}'s code → {answer.status_code}, no code",
            f"a sealed field copied from {label} opened: the AAD does not bind it"
            if code_in(answer)
            else f"a sealed field copied from {label} made the sign-in fail with "
            f"{answer.status_code}, not a refusal",
        )
    _put_back(f, target, person)
    return person


def _put_back(f: Findings, target: Target, person: str, when: str = "put back") -> None:
    """`person` signs in: the sign-in opens their sealed secret."""
    with Browser(target, own_address=True) as browser:
        answer = browser.sign_in(person, target.code_for(person))
    f.expect(
        code_in(answer) is not None,
        f"{when}: {person} signs in with their own code → {answer.status_code}",
        f"{person} cannot sign in ({when})",
    )


def _rotated(f: Findings, target: Target, tenant: str, person: str) -> None:
    """The operator rotates the tenant's data key (`ramparts keys rotate --tenant`): the
    person's sealed secret is re-sealed under the new version and still opens (a sign-in)."""
    done = operator_command(target, "keys", "rotate", "--tenant", tenant, "--json")
    if not f.expect(
        done.returncode == 0,
        f"operator: ramparts keys rotate --tenant {tenant} → exit {done.returncode}",
        f"the data-key rotation failed: {redacted_tail(done.stderr)}",
    ):
        return
    result = json.loads(done.stdout)
    version = int(result.get("data_key_version") or 0)
    with target.owner() as db, rolled_back(db):
        as_tenant(db, tenant_id(target, tenant))
        sealed_under = FieldCipher.version_of(_sealed_of(db, person))
    f.expect(
        version > 1 and sealed_under == version and int(result.get("reencrypted") or 0) > 0,
        f"data key now version {version}; {result.get('reencrypted')} field(s) re-sealed; "
        f"{person}'s secret sealed under version {sealed_under}",
        f"the rotation left {person}'s secret under version {sealed_under}, not {version}",
    )
    _put_back(f, target, person, "after the rotation")


def _shredded(f: Findings, target: Target, kms: Kms) -> None:
    """A throwaway tenant, provisioned by the operator with a sealed TOTP secret: its data key
    opens that secret; after `ramparts tenants delete` its data keys are gone and the copy of
    them kept aside (as a backup keeps them) no longer unwraps, so the secret cannot open."""
    slug = f"shred-{secrets.token_hex(4)}"
    secret = pyotp.random_base32()
    made = operator_module(target, throwaway.__name__, slug, stdin=secret)
    if made.returncode != 0:
        raise DrillError(f"the throwaway tenant was not provisioned: {redacted_tail(made.stderr)}")
    ids = json.loads(made.stdout)
    tenant, user = uuid.UUID(ids["tenant"]), str(ids["user"])
    with target.owner() as db, rolled_back(db):
        as_tenant(db, str(tenant))
        sealed_row = db.execute(
            "SELECT sealed_secret FROM totp_credentials WHERE tenant_id = %s AND user_id = %s",
            (tenant, user),
        ).fetchone()
        keys = db.execute(
            "SELECT purpose, version, wrapped FROM tenant_data_keys WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()
    if sealed_row is None or not keys:
        raise DrillError(f"the throwaway tenant {slug} has no sealed secret or data key")
    sealed = bytes(sealed_row[0])
    kept = {int(v): bytes(w) for p, v, w in keys if p == "data"}
    version = FieldCipher.version_of(sealed)
    f.expect(
        _opens(kms, tenant, version=version, wrapped=kept.get(version), row=user, sealed=sealed)
        == secret.encode(),
        f"throwaway tenant {slug}: its sealed TOTP secret opens with its data key "
        f"v{version} ({len(keys)} data key(s) kept aside)",
        "the throwaway tenant's sealed secret does not open before the deletion",
    )
    done = operator_command(target, "tenants", "delete", slug, "--yes", "--json")
    f.expect(
        done.returncode == 0,
        f"operator: ramparts tenants delete {slug} --yes → exit {done.returncode}, "
        f"{(json.loads(done.stdout) if done.returncode == 0 else {}).get('data_keys_shredded')} "
        "data key(s) shredded",
        f"the tenant's deletion failed: {redacted_tail(done.stderr)}",
    )
    with target.owner() as db, rolled_back(db):
        as_tenant(db, str(tenant))
        left = db.execute(
            "SELECT count(*) FROM tenant_data_keys WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    why = ""
    try:
        opened: bytes | None = _opens(
            kms, tenant, version=version, wrapped=kept.get(version), row=user, sealed=sealed
        )
    except Exception as exc:  # noqa: BLE001 - any failure to open is the shredding's proof
        opened, why = None, type(exc).__name__
    f.expect(
        opened is None and left is not None and left[0] == 0,
        f"after the deletion: {left[0] if left else None} data key(s) left; the kept copy of "
        f"its data key no longer unwraps ({why if opened is None else 'it does'}): the sealed "
        "secret cannot open",
        "the deleted tenant's sealed data still opens (its KMS key was not destroyed)",
    )


def _opens(
    kms: Kms, tenant: uuid.UUID, *, version: int, wrapped: bytes | None, row: str, sealed: bytes
) -> bytes:
    """The sealed TOTP secret opened the way the runtime opens it: the data key unwrapped by
    the KMS (context bound to tenant, purpose, version), then AES-GCM with the row's AAD."""
    if wrapped is None:
        raise DrillError(f"no data key version {version} was kept")
    secret = kms.unwrap(wrapped, context=f"tenant-data-key:{tenant}:data:{version}")
    key = DataKey(tenant=tenant, version=version, secret=secret)
    return FieldCipher.open(key, table=TOTP_TABLE, column=TOTP_COLUMN, row=row, sealed=sealed)
