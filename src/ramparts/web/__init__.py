"""HTTP edge: the ASGI app factory, middleware and problem+json errors."""

from ramparts.web.app import create_app

__all__ = ["create_app"]
