"""SQL used by migrations to put a table behind row-level security.

One helper, so every tenant table gets the same policy, the same FORCE and the same grants;
a test walks the catalog to prove no table was missed.
"""

from __future__ import annotations

from ramparts.config import APP_ROLE

__all__ = ["CURRENT_TENANT", "tenant_table_sql"]

#: The tenant of the current transaction, or NULL when none is set (which matches no row).
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"


def tenant_table_sql(
    table: str, *, privileges: str = "SELECT, INSERT, UPDATE, DELETE"
) -> list[str]:
    """Statements that isolate `table` by its `tenant_id` column.

    The table must also have an index leading with tenant_id (its composite primary or unique
    key usually is one); a test walks the catalog to check.
    """
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})",
        f"GRANT {privileges} ON {table} TO {APP_ROLE}",
    ]
