"""A membership's role is any well-formed role name: the apps, not the schema, say which.

The runtime knows one role (`admin`); every other is brought by an app, so the list that
0001_core once checked cannot stay in the schema. Provisioning refuses a role that is neither
`admin` nor a role of a selected app; the database keeps the shape every role name has.
From here on, each app's migrations are a branch of their own (`ramparts.db.migrate`).

Revision ID: 0019_role_format
Revises: 0018_ai_provenance
"""

from alembic import op

revision = "0019_role_format"
down_revision = "0018_ai_provenance"
branch_labels = None
depends_on = None

ROLE_FORMAT = "role ~ '^[a-z][a-z0-9_]{0,31}$'"


def upgrade() -> None:
    # memberships_role_check: the list 0001_core checked before (PostgreSQL's name for an
    # unnamed column check). ck_memberships_role: the same format check, as 0001_core now
    # creates it; dropped and added again so both kinds of database end alike.
    op.execute("ALTER TABLE memberships DROP CONSTRAINT IF EXISTS memberships_role_check")
    op.execute("ALTER TABLE memberships DROP CONSTRAINT IF EXISTS ck_memberships_role")
    op.execute(f"ALTER TABLE memberships ADD CONSTRAINT ck_memberships_role CHECK ({ROLE_FORMAT})")
