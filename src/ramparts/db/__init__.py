"""PostgreSQL access: engines, tenant-scoped sessions, roles and migrations.

Row-level security is the second wall behind Cedar: every tenant table forces RLS on
`app.tenant_id`, and the runtime role can neither own, bypass nor disable it.
"""

from ramparts.db.engine import Database, DatabaseUrls, open_database

__all__ = ["Database", "DatabaseUrls", "open_database"]
