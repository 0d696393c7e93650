"""The webhook benchmark's baseline (`bench/webhooks.py`): `POST /webhooks/psp` that reads the
body and answers as the real route does, with no signature check, no JSON parsing and no
database. uvicorn starts it with the app's server settings (`--factory bare_webhook:create_app`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request


def create_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/psp")
    async def webhook(request: Request) -> dict[str, str]:
        body = await request.body()
        return {"status": "stored", "event_id": str(len(body))}

    return app
