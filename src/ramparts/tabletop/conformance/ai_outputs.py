"""AZ-3's output part: a tool's result is checked against its schema before anyone sees it. The
drill, as the instance's operator, makes a stored value that a read tool returns break that
tool's result schema (a string past its `maxLength`, off its `enum` or `pattern`), found by
looking for the value the tool returned in the text columns of the tenant's rows; the tool on
that record is then refused, and every changed row is put back.

Nothing here names an app: the tool, its schema and the record come from the declarations and
from what the person's own listing showed; the rows from the database's catalogue. (Each text
column is searched once: sized for a demo's data, not a production database's.)"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ramparts.ai.tools import Risk, Tool
from ramparts.tabletop.conformance.ai_reauthorized import (
    Shown,
    first_result,
    listed,
    listing,
    record_argument,
)
from ramparts.tabletop.conformance.declared import Declared, needs_a_record, sample_arguments
from ramparts.tabletop.conformance.playing import ask, calling, roles_of
from ramparts.tabletop.target import Target

__all__ = ["outputs_checked"]

BROKE = "the tool's result broke its schema"
#: Text columns of the database's tables, with whether their table has a `tenant_id`.
_TEXT_COLUMNS = """
SELECT c.table_schema, c.table_name, c.column_name,
       EXISTS (SELECT 1 FROM information_schema.columns k
               WHERE k.table_schema = c.table_schema AND k.table_name = c.table_name
                 AND k.column_name = 'tenant_id')
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE t.table_type = 'BASE TABLE'
  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
  AND c.data_type IN ('text', 'character varying')
"""


def _schema_at(schema: Mapping[str, Any], tokens: list[str]) -> Mapping[str, Any]:
    """The part of a result schema that describes the value at `tokens` ({} if none)."""
    for token in tokens:
        if token.isdigit() and schema.get("type") == "array":
            schema = schema.get("items", {})
        else:
            schema = schema.get("properties", {}).get(token, {})
    return schema


def _breaking(schema: Mapping[str, Any], value: str) -> Iterator[str]:
    """Values for a string that its schema refuses, each unique (found again by it)."""
    mark = f"drill-{secrets.token_hex(6)}"
    if "enum" in schema:
        yield mark
    if isinstance(schema.get("maxLength"), int):
        yield (mark + "x" * schema["maxLength"])[: schema["maxLength"] + 1]
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and re.search(pattern, mark + " !") is None:
        yield mark + " !"


def _places(tool: Tool, result: Any) -> Iterator[tuple[str, str, list[str]]]:
    """(pointer, value, breaking values) of each string of `result` its schema constrains."""
    if not isinstance(result, dict):
        return
    for pointer, value in tool.split_result(result)[0] + tool.split_result(result)[1]:
        if not isinstance(value, str) or len(value) < 4:
            continue
        schema = _schema_at(tool.result, pointer.split("/")[1:])
        breaking = list(_breaking(schema, value))
        if breaking:
            yield pointer, value, breaking


@dataclass(frozen=True)
class _Planted:
    """Where a value was changed to one off its schema: the column, the tenant's rows."""

    table: sql.Composable
    column: str
    value: str
    planted: str
    rows: int

    def put_back(self, conn: psycopg.Connection[Any]) -> int:
        """The rows changed back (the planted value is unique: exactly those)."""
        done = conn.execute(
            sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                self.table, sql.Identifier(self.column), sql.Identifier(self.column)
            ),
            (self.value, self.planted),
        )
        return done.rowcount


def _holders(
    conn: psycopg.Connection[Any], value: str, tenant: str
) -> list[tuple[sql.Composable, str, str | None]]:
    """The text columns holding `value` in a row of the tenant (or of a table without
    tenants)."""
    found: list[tuple[sql.Composable, str, str | None]] = []
    for schema, table, column, tenanted in conn.execute(_TEXT_COLUMNS).fetchall():
        where = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
            where, sql.Identifier(column)
        )
        values: tuple[str, ...] = (value,)
        if tenanted:
            query += sql.SQL(" AND tenant_id::text = %s")
            values += (tenant,)
        try:
            count = conn.execute(query, values).fetchone()
        except psycopg.Error:  # a table the owner cannot read holds nothing a tool returns
            continue
        if count and count[0]:
            found.append((where, str(column), tenant if tenanted else None))
    return found


def _planted(
    conn: psycopg.Connection[Any], value: str, breaking: list[str], tenant: str
) -> list[_Planted]:
    """Each text column holding `value` in the tenant's rows, changed there to the first
    breaking value it takes (a column's own limit may refuse some)."""
    done = []
    for table, column, scope in _holders(conn, value, tenant):
        for planted in breaking:
            query = sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                table, sql.Identifier(column), sql.Identifier(column)
            )
            values: tuple[str, ...] = (planted, value)
            if scope is not None:
                query += sql.SQL(" AND tenant_id::text = %s")
                values += (scope,)
            try:
                with conn.transaction():
                    rows = conn.execute(query, values).rowcount
            except psycopg.Error:
                continue
            done.append(_Planted(table, column, value, planted, rows))
            break
    return done


def outputs_checked(
    target: Target,
    declared: Declared,
    people: list[Shown],
    evidence: list[str],
    *,
    cache: dict[Any, list[str]],
) -> tuple[list[str], bool]:
    """What is wrong, and whether a result off its schema was made at all (the people's
    listings asked once, kept in `cache`)."""
    if target.urls is None:
        evidence.append("the instance's database is not reachable from here: no value to plant")
        return [], False
    for shown in people:
        for name in sorted(shown.tools):
            tool = declared.tool(name)
            if tool is None or tool.risk is not Risk.READ or not needs_a_record(tool):
                continue
            lister = listing(declared, shown, tool.action.entity_type)
            own = listed(target, shown, lister, cache) if lister is not None else []
            if not own:
                continue
            call = (sample_arguments(tool) or {}) | {record_argument(tool): own[0]}
            before = ask(target, shown.session, "Show it.", calling((tool.name, call)))
            if [a.get("status") for a in before.actions()] != ["executed"]:
                continue
            result = first_result(before)
            for pointer, value, breaking in _places(tool, result):
                place = (pointer, value, breaking)
                wrong = _try(target, shown, tool, call, place, evidence=evidence)
                if wrong is not None:
                    return wrong, True
    evidence.append("no stored value a read tool returned could be made to break its schema")
    return [], False


def _try(
    target: Target,
    shown: Shown,
    tool: Tool,
    call: dict[str, Any],
    place: tuple[str, str, list[str]],
    *,
    evidence: list[str],
) -> list[str] | None:
    """The tool again, with the value at `place` stored off its schema: refused as breaking
    it. None when the value could not be planted."""
    pointer, value, breaking = place
    with target.owner() as conn:
        planted: list[_Planted] = []
        try:
            planted = _planted(conn, value, breaking, shown.who.tenant)
            if not planted:
                return None
            answer = ask(target, shown.session, "Show it again.", calling((tool.name, call)))
        finally:
            restored = sum(p.put_back(conn) for p in planted)
    changed = sum(p.rows for p in planted)
    action = next(iter(answer.actions()), {})
    label = f"{roles_of(shown.who)} calls {tool.name}"
    evidence.append(
        f"{label} on their own record, the stored value at {pointer} made to break the result "
        f"schema by the operator → {action.get('status')}: {action.get('reason')}"[:400]
    )
    evidence.append(
        f"the operator changed {changed} row(s) of the tenant for it, and put {restored} back"
    )
    wrong = []
    if action.get("status") != "refused" or not str(action.get("reason", "")).startswith(BROKE):
        wrong.append(f"{label} returned a result off its schema ({action.get('status')})")
    if restored != changed:
        wrong.append(f"the planted value at {pointer} could not be put back everywhere")
    return wrong
