"""A live server on loopback: the real app in Uvicorn in a thread, with real PostgreSQL."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from ramparts.ai.gateway import ModelEndpoint
from ramparts.ai.models import Model
from ramparts.config import Settings
from ramparts.crypto.keystore import LocalKms
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.web.app import create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    def __init__(self, app: FastAPI, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        self.base_url = f"http://{host}:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
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
        self.client = httpx.Client(base_url=self.base_url, timeout=10)
        return self.client

    def __exit__(self, *_: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Kms:
    """The KMS the live servers use, so tests can provision what they will read."""
    return temporary_kms(tmp_path_factory.mktemp("kms"))


def temporary_kms(directory: Path) -> LocalKms:
    """A local keystore in `directory` with its key file beside it (never in the checkout)."""
    return LocalKms(directory / "keystore.json", key_file=directory / "kek", create_key_file=True)


class Servers:
    """Starts live apps on demand and stops them all at the end."""

    def __init__(self, urls: DatabaseUrls, kms: Kms) -> None:
        self.urls = urls
        self.kms = kms
        self.running: list[LiveServer] = []

    def start(
        self,
        app_hook: Callable[[FastAPI], None] | None = None,
        *,
        database_urls: DatabaseUrls | None = None,
        host: str = "127.0.0.1",
        adapter: Model | None = None,
        endpoints: Sequence[ModelEndpoint] | None = None,
        **overrides: object,
    ) -> httpx.Client:
        """Start the app with these settings overrides; returns an HTTP client for it.

        `host` names the server in its public URL (cookies ignore ports, so two servers that
        must keep apart their cookies need different host names). `adapter` and `endpoints`
        are the app's own model (`create_app`'s `model` and `endpoints`)."""
        port = free_port()
        settings = Settings(  # type: ignore[arg-type]
            **{
                "home": "/nonexistent",
                "secret_key": secrets.token_urlsafe(32),
                "public_url": f"http://{host}:{port}",
                **overrides,
            }
        )
        database = Database((database_urls or self.urls).app, pool_size=2)
        app = create_app(settings, database, self.kms, model=adapter, endpoints=endpoints)
        if app_hook is not None:
            app_hook(app)
        live = LiveServer(app, port, host)
        self.running.append(live)
        return live.__enter__()

    def stop(self) -> None:
        for live in self.running:
            live.__exit__()


@pytest.fixture
def serve_app(urls: DatabaseUrls, kms: Kms) -> Iterator[Callable[..., httpx.Client]]:
    servers = Servers(urls, kms)
    yield servers.start
    servers.stop()


@pytest.fixture(scope="module")
def serve_module_app(urls: DatabaseUrls, kms: Kms) -> Iterator[Callable[..., httpx.Client]]:
    servers = Servers(urls, kms)
    yield servers.start
    servers.stop()


@pytest.fixture
def client(serve_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_app(cors_origins=("https://app.example",))
