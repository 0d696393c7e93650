"""The App contract: how an app plugs into the Ramparts runtime.

An app is one declarative `App` object, published under the Python entry-point group
`ramparts.apps` (the entry point's name is the app's name) and chosen with `RAMPARTS_APPS`
(unset: the installed apps that say `default=True`). The runtime composes what the chosen apps
declare: their routes behind the permission gate, their tools in the assistant's registry,
their Cedar (`AppPolicy`) with the runtime's policies into one engine (`policy_engine`), their
roles, their migrations (an Alembic branch each), their encrypted columns and their demo data.
The runtime itself names no app.
"""

from ramparts.apps.composition import (
    app_roles,
    app_routers,
    encrypted_columns_of,
    migration_branches,
    policy_engine,
    policy_fragment,
    policy_fragments,
)
from ramparts.apps.contract import (
    App,
    AppDemo,
    AppError,
    AppPolicy,
    AppServices,
    DemoUser,
    NavLink,
)
from ramparts.apps.discovery import ENTRY_POINT_GROUP, installed_apps, selected_apps

__all__ = [
    "ENTRY_POINT_GROUP",
    "App",
    "AppDemo",
    "AppError",
    "AppPolicy",
    "AppServices",
    "DemoUser",
    "NavLink",
    "app_roles",
    "app_routers",
    "encrypted_columns_of",
    "installed_apps",
    "migration_branches",
    "policy_engine",
    "policy_fragment",
    "policy_fragments",
    "selected_apps",
]
