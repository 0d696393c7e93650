"""AZ-2, tenants kept apart at both layers. Under the API first: every tenant table has
row-level security enabled and forced, with policies that read the tenant setting; the runtime
role is powerless (no superuser, no BYPASSRLS, owns nothing, a member of nothing); and, as
that role acting for one tenant, a SELECT with no WHERE on every tenant table sees none of
the other tenant's rows, and writing them is refused. Then through the API: what one tenant's
people read holds no id of the other's, and reading the other's records by id finds nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ramparts.audit.events import Action
from ramparts.tabletop.conformance.catalog import (
    TENANT_SETTING,
    TableSecurity,
    as_tenant,
    count,
    rolled_back,
    table_security,
    tenant_tables,
)
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.people import (
    admin_of,
    first_of_each_role_set,
    other_tenant,
    tenant_id,
)
from ramparts.tabletop.conformance.reads import id_values, item_route, list_routes, strings_in
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import DrillError, Target

__all__ = ["check"]

#: The audit trail's list: judged by chain, not by the ids it mentions (see `_foreign`).
AUDIT_EVENTS = "/api/audit/events"
#: Records of the other tenant read back by id, per list and reader.
ITEMS_PER_LIST = 3
#: How a foreign write is refused by the database's row-level security, and only so.
RLS_REFUSAL = "refused by row-level security"
NOTHING_TO_COPY = "no row to copy"
#: The attributes each Cedar decision must have been given, besides roles.
DECISION_ATTRIBUTES = ("tenant", "region", "sensitivity")


def check(target: Target) -> Outcome:
    home = target.tenants()[0]
    away = other_tenant(target, home)
    f = Findings(
        "every tenant table has row-level security ENABLE + FORCE with policies on the tenant "
        "setting; the runtime role is neither owner, superuser nor BYPASSRLS; as that role "
        f"acting for {home}, no {away} row is seen and writing one is refused; through the "
        f"API, {home}'s people read nothing of {away}'s"
    )
    if target.urls is None:
        raise DrillError("the instance's database is not reachable: isolation under the API")
    role = str(target.urls.app.username)
    tables = _policies(f, target, role)
    _role(f, target, role)
    _as_runtime(f, target, tables, home, away)
    with f.part("the API's reads"):
        _through_api(f, target, home, away)
    return f.outcome(
        f"{len(tables)} tenant tables forced under row-level security; {role} powerless; as "
        f"{role} for {home}, no {away} row seen and every write of one refused; the API gave "
        f"{home}'s people nothing of {away}'s"
    )


def _policies(f: Findings, target: Target, role: str) -> list[str]:
    with target.owner() as db:
        tables = tenant_tables(db)
        rls = [
            str(name)
            for (name,) in db.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
                "AND c.relrowsecurity"
            )
        ]
        guarded = sorted(set(tables) | set(rls))
        broken = []
        for table in guarded:
            why = _unsafe(table_security(db, table), role)
            if why is not None:
                broken.append(f"{table}: {why}")
    f.expect(
        not broken and bool(tables),
        f"{len(guarded)} tables under row-level security ({len(tables)} with tenant_id): "
        f"ENABLE + FORCE, each policy for {role} reads {TENANT_SETTING}",
        "; ".join(broken) or "no tenant table found",
    )
    return tables


def _unsafe(security: TableSecurity, role: str) -> str | None:
    """Why a table's row-level security does not confine `role` to one tenant, if it does not."""
    if not security.enabled:
        return "row-level security not enabled"
    if not security.forced:
        return "row-level security not FORCEd (its owner is not confined)"
    mine = [p for p in security.policies if p.applies_to(role)]
    if not mine:
        return f"no row-level security policy applies to {role}"
    loose = [p.name for p in mine if not p.confined()]
    if loose:
        return f"policy {', '.join(loose)} does not confine rows by {TENANT_SETTING}"
    return None


def _role(f: Findings, target: Target, role: str) -> None:
    with target.owner() as db:
        row = db.execute(
            "SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, "
            "(SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid), "
            "(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid) "
            "FROM pg_roles r WHERE r.rolname = %s",
            (role,),
        ).fetchone()
    if row is None:
        raise DrillError(f"no role {role} in the instance's database")
    superuser, bypass, createrole, createdb, owned, member_of = row
    f.expect(
        not (superuser or bypass or createrole or createdb) and owned == 0 and member_of == 0,
        f"{role}: superuser {superuser}, BYPASSRLS {bypass}, CREATEROLE {createrole}, "
        f"CREATEDB {createdb}, owns {owned} relations, member of {member_of} roles",
        f"the runtime role {role} has power it must not have",
    )


def _as_runtime(f: Findings, target: Target, tables: list[str], home: str, away: str) -> None:
    home_id, away_id = tenant_id(target, home), tenant_id(target, away)
    with target.owner() as db, rolled_back(db):
        as_tenant(db, away_id)
        present = {t: count(db, t, "tenant_id = %s", away_id) for t in tables}
    read: dict[str, tuple[int, int]] = {}
    writes: dict[str, str] = {}
    with target.runtime() as conn, rolled_back(conn):
        as_tenant(conn, home_id)
        for table in tables:
            rights = _rights(conn, table)
            if "SELECT" in rights:
                seen = count(conn, table)
                foreign = count(conn, table, "tenant_id <> %s", home_id)
                read[table] = (seen, foreign)
            if "INSERT" in rights:
                writes[table] = _insert(conn, table, home_id, away_id)
            for verb in ("UPDATE", "DELETE"):
                if verb in rights:
                    touched = _touch(conn, table, verb, away_id)
                    if touched:
                        writes[f"{table} {verb}"] = f"touched {touched} {away} rows"
    leaked = {t: n for t, (_, n) in read.items() if n}
    f.expect(
        not leaked,
        f"as the runtime role for {home}, a SELECT with no WHERE on {len(read)} tenant tables "
        f"saw {sum(s for s, _ in read.values())} rows, {sum(leaked.values())} of another "
        f"tenant ({away} has {sum(present.values())} rows in them)",
        f"rows of another tenant seen: {leaked}",
    )
    f.saw(
        "per table, rows seen for "
        + home
        + " / "
        + away
        + " rows present: "
        + ", ".join(f"{t} {read[t][0]}/{present[t]}" for t in sorted(read) if present[t])
    )
    let_through = {t: how for t, how in writes.items() if how == "written"}
    by_rls = sum(1 for how in writes.values() if how == RLS_REFUSAL)
    uncopied = sum(1 for how in writes.values() if how == NOTHING_TO_COPY)
    f.expect(
        sum(present.values()) > 0,
        f"{away} has {sum(present.values())} rows in the tenant tables to be seen",
        f"{away} has no rows: not seeing them proves nothing",
    )
    f.expect(
        not let_through and by_rls > 0,
        f"a full copy of a {home} row with the tenant swapped to {away}: refused by "
        f"row-level security on {by_rls} of {len(writes)} writable tables (before it, by "
        f"another rule, not counted: {_others(writes)}; {uncopied} with no {home} row to "
        f"copy); UPDATE/DELETE of {away} rows touched none",
        f"writes of another tenant's rows went through: {let_through}"
        if let_through
        else "no foreign write was refused by row-level security",
    )


def _rights(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rights = ("SELECT", "INSERT", "UPDATE", "DELETE")
    row = conn.execute(
        "SELECT " + ", ".join(f"has_table_privilege(%s, '{r}')" for r in rights),
        (table,) * len(rights),
    ).fetchone()
    return {r for r, granted in zip(rights, row or (), strict=False) if granted}


def _insert(conn: psycopg.Connection[Any], table: str, home: str, away: str) -> str:
    """A full copy of one of `home`'s rows with its tenant swapped for `away`, as a bug in
    application code would write it: every column valid, only the tenant foreign. What
    refused it, or "written"; "no row to copy" when `home` has none in `table`."""
    columns = [
        str(name)
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' AND attidentity <> 'a' ORDER BY attnum",
            (table,),
        )
    ]
    chosen = [sql.SQL("%s::uuid") if c == "tenant_id" else sql.Identifier(c) for c in columns]
    statement = sql.SQL(
        "INSERT INTO {t} ({cols}) SELECT {chosen} FROM {t} WHERE tenant_id = %s LIMIT 1"
    ).format(
        t=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        chosen=sql.SQL(", ").join(chosen),
    )
    try:
        with conn.transaction():  # a savepoint: the refusal does not end the outer one
            written = conn.execute(statement, (away, home)).rowcount
    except psycopg.errors.InsufficientPrivilege as exc:
        if "row-level security" in str(exc):
            return RLS_REFUSAL
        return f"refused by {type(exc).__name__}"
    except psycopg.Error as exc:
        return f"refused by {type(exc).__name__}"
    return "written" if written else NOTHING_TO_COPY


def _touch(conn: psycopg.Connection[Any], table: str, verb: str, tenant: str) -> int:
    template = (
        "UPDATE {} SET tenant_id = tenant_id WHERE tenant_id = %s"
        if verb == "UPDATE"
        else "DELETE FROM {} WHERE tenant_id = %s"
    )
    try:
        with conn.transaction():
            return conn.execute(sql.SQL(template).format(sql.Identifier(table)), (tenant,)).rowcount
    except psycopg.Error:
        return 0  # refused outright (a trigger): nothing touched


def _others(writes: dict[str, str]) -> str:
    """The tables whose INSERT was refused before row-level security was asked, and by what."""
    found = [
        f"{table} by {how.removeprefix('refused by ')}"
        for table, how in sorted(writes.items())
        if how.startswith("refused") and how != RLS_REFUSAL
    ]
    return ", ".join(found) or "none"


def _attributes(f: Findings, target: Target, home: str, since: str) -> None:
    """What the instance's own Cedar decisions were given (its audit trail), for the requests
    this check made: the resource's tenant, the caller's region, the resource's sensitivity."""
    decisions = audit_events(
        target.session(admin_of(target, home)),
        since=since,
        action=Action.AUTHORIZATION_DECIDED.value,
    )
    # A listing's decision records what it withheld, for one type of resource: no one record.
    single = [e for e in decisions if "withheld" not in (e.get("details") or {})]
    lacking = [e for e in single if _attributes_missing(e)]
    regions = sorted({str((e.get("details") or {}).get("region")) for e in single})
    unseen = sum(1 for e in single if (e.get("resource") or {}).get("tenant") == "")
    f.expect(
        bool(single) and not lacking,
        f"{len(single)} Cedar decisions in {home}'s trail since the check began, each with "
        f"the resource's tenant (unseen: {unseen}, all refused), the region "
        f"({', '.join(regions)}) and the sensitivity; "
        f"{sum(1 for e in decisions if e.get('decision') == 'deny')} refusals"
        + (f" ({cited(single[:1])[0]})" if single else ""),
        f"{len(lacking)} of {len(single)} decisions lack an attribute: "
        + "; ".join(
            f"{c} lacks {', '.join(_attributes_missing(e))} "
            f"({(e.get('details') or {}).get('action')} {(e.get('resource') or {})})"
            for c, e in zip(cited(lacking[:3]), lacking[:3], strict=True)
        )
        if single
        else "no Cedar decision recorded for the check's requests",
    )


def _attributes_missing(event: dict[str, Any]) -> list[str]:
    """The attributes a decision lacks. A record read by id that the caller's tenant cannot
    see has no tenant to give (row-level security hid it): that decision must be a refusal."""
    resource, details = event.get("resource") or {}, event.get("details") or {}
    given = {"tenant": resource.get("tenant")} | {
        name: details.get(name) for name in ("region", "sensitivity")
    }
    if event.get("decision") == "deny" and resource.get("tenant") == "":
        given["tenant"] = "unseen"
    return [name for name in DECISION_ATTRIBUTES if not given.get(name)]


def _foreign(path: str, body: Any, theirs: set[str], home: str) -> str | None:
    """What of another tenant a list answer holds, if anything. The audit trail is judged by
    the chain each event is on: it records what the tenant's people asked for, so another
    tenant's id they tried to read is in it as evidence, not as a leak."""
    if path == AUDIT_EVENTS:
        others = {str(e.get("tenant")) for e in body.get("items", []) if e.get("tenant") != home}
        return f"events of other chains {sorted(others)}" if others else None
    leaked = theirs & set(strings_in(body))
    return f"{len(leaked)} ids of another tenant" if leaked else None


def _through_api(f: Findings, target: Target, home: str, away: str) -> None:
    started = now()
    listings = list_routes(target)
    theirs: dict[str, list[tuple[frozenset[str], str]]] = {}
    away_strings = {tenant_id(target, away)}
    for person, roles in first_of_each_role_set(target, away):
        session = target.session(person)
        for listing in listings:
            answer = session.get(listing.path)
            if answer.status_code == 200:
                ids = id_values(answer.json())
                away_strings |= set(ids)
                theirs.setdefault(listing.path, []).extend((roles, i) for i in ids)
    reads, found, items = 0, [], []
    readers = first_of_each_role_set(target, home)
    for person, _ in readers:
        session = target.session(person)
        for listing in listings:
            answer = session.get(listing.path)
            if answer.status_code != 200:
                continue
            reads += 1
            leaked = _foreign(listing.path, answer.json(), away_strings, tenant_id(target, home))
            if leaked:
                found.append(f"GET {listing.path} as {person}: {leaked}")
    for person, roles in readers:
        session = target.session(person)
        for listing in listings:
            mine = [i for r, i in theirs.get(listing.path, []) if r == roles]
            for item_id in mine[:ITEMS_PER_LIST] if listing.item else []:
                status = session.get(item_route(listing, item_id)).status_code
                items.append(status)
                if status not in {403, 404}:
                    found.append(f"GET {listing.item} of a {away} record as {person} → {status}")
    _attributes(f, target, home, started)
    f.saw(f"{away}'s people read {len(away_strings) - 1} record ids across {len(theirs)} lists")
    f.expect(
        not found and reads > 0 and bool(items),
        f"{reads} list reads by {home}'s people ({len(readers)} role sets) hold none of them; "
        f"{len(items)} reads of {away} records by id → {sorted(set(items))}",
        "; ".join(found)
        or (
            f"{home}'s people could read no list"
            if not reads
            else f"no {away} record was read by id: the by-id refusal is not shown"
        ),
    )
