from tests.live import client, sealer, serve_app

__all__ = ["client", "sealer", "serve_app"]
