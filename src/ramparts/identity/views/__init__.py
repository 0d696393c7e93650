"""HTTP for identity: the OAuth 2.0 / OIDC endpoints (`oauth`, `logout`), the sign-in pages
between authorize and the code (`first_factor`, `second_factor`, on `signin_flow`), and the
signed-in user's own account (`account`).

The routes are module-level; they reach the identity services the app was built with
(`IdentityHttp`, in `app.state.identity`) through FastAPI dependencies (`dependencies`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ramparts.identity.views import account, first_factor, logout, oauth, second_factor
from ramparts.identity.views.dependencies import IdentityHttp
from ramparts.identity.views.signin_flow import install_expired_handler

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["IdentityHttp", "install"]


def install(app: FastAPI, identity: IdentityHttp) -> None:
    """Serve the identity routes in `app`, with the services they reach."""
    app.state.identity = identity
    install_expired_handler(app)
    for module in (oauth, first_factor, second_factor, account, logout):
        app.include_router(module.router)
