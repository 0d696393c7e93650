"""ID-4, secrets: the keys are the KMS's (the database holds them only wrapped, and none of
the secrets the drill knows in clear), the browser gets none (the pages and scripts a signed-in
person loads, and the API's answers, scanned for every kind of secret and for each known
value), and a secret typed to the assistant is refused before any model sees it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from contextlib import closing
from html.parser import HTMLParser

import httpx

from ramparts.audit.events import Action
from ramparts.crypto.kms import WRAPPED
from ramparts.detectors import SECRET_KINDS, Kind, find_sensitive
from ramparts.identity.models import ADMIN_ROLE
from ramparts.tabletop.browser import signed_in_browser
from ramparts.tabletop.conformance.catalog import all_tables, as_tenant, rolled_back, rows_as_text
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.people import (
    admin_of,
    first_of_each_role_set,
    spare_people,
    tenant_id,
)
from ramparts.tabletop.conformance.reads import list_routes
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import DrillError, Target

__all__ = ["check", "leaks"]

#: Pages a crawl never follows: they start or end a sign-in, or are the scripts' API door.
_NOT_PAGES = re.compile(r"^/app/(login|callback|logout|api/)")
_CRAWLED = ("/app", "/static/")
MAX_PAGES = 40
#: Rows read per table and tenant when looking for secrets in the database.
MAX_ROWS = 20_000
#: The secret kinds looked for by shape. Not PASSWORD: that finding is a credential word
#: followed by a value, which scripts and schemas are full of (`password: {type: ...}`); the
#: passwords that exist are looked for by value instead.
SCANNED_KINDS = SECRET_KINDS - {Kind.PASSWORD}
#: What the API's answers may carry by design: the token endpoint's tokens are not scanned.
_PUBLIC_ANSWERS = ("/.well-known/openid-configuration", "/oauth/jwks", "/openapi.json")


def known_secrets(target: Target) -> dict[str, str]:
    """By name, every secret the drill knows: the webhook secret, and each demo person's
    password and TOTP secret."""
    found = {"the sandbox PSP's webhook secret": target.webhook_secret}
    for user in target.report.get("users", []):
        found[f"{user['username']}'s password"] = str(user["password"])
        found[f"{user['username']}'s TOTP secret"] = str(user["totp_secret"])
    return found


def leaks(text: str, known: dict[str, str]) -> list[str]:
    """What in `text` is a secret: a known one (by name) or one of a secret kind (by kind;
    the value itself never goes into evidence)."""
    named = [name for name, value in known.items() if value in text or _hex(value) in text]
    kinds = sorted({f.kind.value for f in find_sensitive(text) if f.kind in SCANNED_KINDS})
    return named + kinds


def _hex(value: str) -> str:
    return value.encode().hex()


def check(target: Target) -> Outcome:
    f = Findings(
        "the database holds signing and data keys only wrapped by the KMS, and no known secret "
        "in clear; the pages, scripts and API answers a person gets carry no secret; a secret "
        "typed to the assistant is refused (422 content-refused) before the model, audited"
    )
    known = known_secrets(target)
    _wrapped_keys(f, target)
    _database(f, target, known)
    _browser(f, target, known)
    _api(f, target, known)
    _assistant(f, target)
    return f.outcome(
        f"keys wrapped by the KMS, none of {len(known)} known secrets in the database; pages, "
        "scripts and API answers clean; the assistant refused a secret before the model"
    )


def _wrapped_keys(f: Findings, target: Target) -> None:
    with target.owner() as db:
        signing = db.execute("SELECT sealed_private, public_jwk FROM signing_keys").fetchall()
        audit = db.execute("SELECT sealed_private FROM audit_signing_keys").fetchall()
    unwrapped = [r for r in [*signing, *audit] if not WRAPPED.match(bytes(r[0]))]
    private = [r for r in signing if "d" in (r[1] or {})]
    f.expect(
        bool(signing) and not unwrapped and not private,
        f"{len(signing)} token signing key(s), {len(audit)} audit key(s): every private half "
        "wrapped by a KMS key (`<key>:v<n>:`), public JWKs without private parts",
        "a signing key is stored without the KMS's wrapping",
    )
    tenants = [tenant_id(target, slug) for slug in target.tenants()]
    with target.owner() as db:
        keys: dict[str, tuple[str, bytes]] = {}
        for tenant in tenants:
            with rolled_back(db):
                as_tenant(db, tenant)
                row = db.execute(
                    "SELECT kms_key, wrapped FROM tenant_data_keys WHERE tenant_id = %s "
                    "AND purpose = 'data' ORDER BY version DESC LIMIT 1",
                    (tenant,),
                ).fetchone()
            if row is not None:
                keys[tenant] = (str(row[0]), bytes(row[1]))
    wrapped = all(blob.startswith(name.encode() + b":") for name, blob in keys.values())
    f.saw(
        f"the instance's profile: {target.description.get('profile', 'not stated')} (dev keeps "
        "the KMS in the local sealed keystore; prod refuses anything but Vault)"
    )
    f.expect(
        len(keys) == len(tenants) and wrapped and len({n for n, _ in keys.values()}) == len(keys),
        f"data keys: {len(keys)} of {len(tenants)} tenants have one, each wrapped by its own "
        f"KMS key ({', '.join(sorted(n.split(':')[0] for n, _ in keys.values()))})",
        "a tenant's data key is missing, unwrapped or shares a KMS key",
    )


def _database(f: Findings, target: Target, known: dict[str, str]) -> None:
    tenants = [tenant_id(target, slug) for slug in target.tenants()]
    found: dict[str, set[str]] = {}
    with target.owner() as db:
        tables = all_tables(db)
        for table in tables:
            for text in rows_as_text(db, table, tenants, limit=MAX_ROWS):
                for name, value in known.items():
                    if value in text or _hex(value) in text:
                        found.setdefault(table, set()).add(name)
    f.expect(
        not found,
        f"{len(tables)} tables read as the owner: none holds any of the {len(known)} known "
        "secrets in clear (text or bytes)",
        "secrets stored in clear: "
        + "; ".join(f"{t}: {', '.join(sorted(n))}" for t, n in sorted(found.items())),
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"href", "src"} and value and value.startswith("/"):
                self.found.append(value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.found


def _readers(target: Target) -> tuple[str, str]:
    """Who loads the pages and reads the API: the tenant's administrator (who sees the most),
    and a spare person of another role (whose own web sign-in is their only one)."""
    tenant = target.tenants()[0]
    return admin_of(target, tenant), spare_people(target, tenant)[-1]


def _browser(f: Findings, target: Target, known: dict[str, str]) -> None:
    """The anonymous pages, then each page a signed-in person reaches from /app."""
    seen: dict[str, list[str]] = {}
    for person in [None, *_readers(target)]:
        browser = target.client() if person is None else signed_in_browser(target, person)
        with closing(browser):  # already opened by its sign-in
            visited = _crawl(browser, known, seen)
        f.saw(f"{visited} pages and files loaded as {person or 'anyone'}")
    f.expect(
        not seen,
        "pages and scripts carry no secret (kinds and known values)",
        "secrets in the browser's files: " + "; ".join(f"{p}: {s}" for p, s in seen.items()),
    )


def _crawl(browser: httpx.Client, known: dict[str, str], seen: dict[str, list[str]]) -> int:
    """Every page under /app and file under /static/ reachable from / and /app (GETs only,
    never a sign-in or sign-out link); what leaks, by path, into `seen`."""
    queue, visited = ["/", "/app"], set[str]()
    while queue and len(visited) < MAX_PAGES:
        path = queue.pop(0)
        if path in visited or _NOT_PAGES.match(path):
            continue
        visited.add(path)
        answer = browser.get(path)
        if answer.status_code != 200:
            continue
        found = leaks(answer.text, known)
        if found:
            seen[path] = found
        if "html" in answer.headers.get("content-type", ""):
            queue += [link for link in _links(answer.text) if link.startswith(_CRAWLED)]
    return len(visited)


def _api(f: Findings, target: Target, known: dict[str, str]) -> None:
    answers: dict[str, str] = {}
    with target.client() as http:
        for path in _PUBLIC_ANSWERS:
            answers[f"GET {path}"] = http.get(path).text
    listings = list_routes(target)
    admin, _ = _readers(target)
    others = [
        u for u, r in first_of_each_role_set(target, target.tenants()[0]) if ADMIN_ROLE not in r
    ]
    for person in [admin, *others[:1]]:
        session = target.session(person)
        for listing in listings:
            answer = session.get(listing.path)
            if answer.status_code == 200:
                answers[f"GET {listing.path} as {person}"] = answer.text
    found = {where: s for where, text in answers.items() if (s := leaks(text, known))}
    f.expect(
        not found,
        f"{len(answers)} API answers carry no secret",
        "secrets in API answers: " + "; ".join(f"{w}: {s}" for w, s in found.items()),
    )


def _assistant(f: Findings, target: Target) -> None:
    tenant = target.tenants()[0]
    canary = f"sk_live_{secrets.token_hex(16)}"
    started = now()
    if target.script is not None:
        target.script.play([{"text": "noted"}])
    answer = None
    for person in _people_with_assistant(target, tenant):
        answer = target.session(person).assistant(f"please keep my key {canary} for later")
        if answer.status_code != 403:
            break
    if answer is None:
        raise DrillError(f"no one of {tenant} may use the assistant")
    kind = answer.json().get("type", "") if answer.status_code >= 400 else ""
    f.expect(
        answer.status_code == 422 and kind.endswith("content-refused"),
        f"{person} sent the assistant an API key → {answer.status_code} {kind}",
        f"a secret sent to the assistant was not refused ({answer.status_code})",
    )
    if target.script is not None:
        calls = target.script.seen()
        f.expect(not calls, f"model calls for it: {len(calls)}", "the model was shown the secret")
    refused = audit_events(
        target.session(admin_of(target, tenant)),
        since=started,
        action=Action.CONTENT_REFUSED.value,
    )
    if f.expect(bool(refused), f"{len(refused)} refusal(s) audited", "the refusal is not audited"):
        f.evidence += cited(refused)


def _people_with_assistant(target: Target, tenant: str) -> Iterable[str]:
    """The tenant's people, one per role set, non-administrators first."""
    people = first_of_each_role_set(target, tenant)
    return [u for u, r in people if ADMIN_ROLE not in r] + [u for u, r in people if ADMIN_ROLE in r]
