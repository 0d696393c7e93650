from tests.live import client, sealer, serve_app, serve_module_app

__all__ = ["client", "sealer", "serve_app", "serve_module_app"]
