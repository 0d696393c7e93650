"""A live server on loopback: the real app, served by Uvicorn in a thread, with real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from ramparts.config import Settings
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.web.app import create_app


class LiveServer:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_level="warning",
                server_header=False,
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve_app(urls: DatabaseUrls) -> Iterator[Callable[..., httpx.Client]]:
    """Start the app with the given settings overrides; returns an HTTP client for it."""
    servers: list[LiveServer] = []

    def start(
        app_hook: Callable[[FastAPI], None] | None = None,
        *,
        database_urls: DatabaseUrls | None = None,
        **overrides: object,
    ) -> httpx.Client:
        settings = Settings(home="/nonexistent", **overrides)  # type: ignore[arg-type]
        app = create_app(settings, Database((database_urls or urls).app, pool_size=2))
        if app_hook is not None:
            app_hook(app)
        live = LiveServer(app)
        servers.append(live)
        return live.__enter__()

    yield start
    for live in servers:
        live.__exit__()


@pytest.fixture
def client(serve_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_app(cors_origins=("https://app.example",))
