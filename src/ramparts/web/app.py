"""The ASGI application factory: wires the domain services to HTTP."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute, Route

from ramparts.ai import views as ai_views
from ramparts.ai.approvals import Approvals
from ramparts.ai.conversations import Conversations
from ramparts.ai.endpoints import endpoints_for
from ramparts.ai.gateway import Gateway, ModelEndpoint
from ramparts.ai.killswitch import KillSwitch
from ramparts.ai.limits import AssistantLimits, Limiter
from ramparts.ai.models import Model
from ramparts.ai.tools import Risk, ToolRegistry
from ramparts.alerts import Alerter
from ramparts.apps import (
    App,
    AppError,
    AppServices,
    NavLink,
    app_routers,
    migration_branches,
    policy_engine,
    selected_apps,
)
from ramparts.audit import views as audit_views
from ramparts.audit.events import Actor
from ramparts.audit.sequencer import Sequencer
from ramparts.audit.services import AuditLog, Checkpointer, audit_redactor
from ramparts.config import Settings
from ramparts.crypto.backends import server_secret
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.db.gauges import OperationsGauges
from ramparts.db.migrate import ExpectedSchema
from ramparts.db.request import request_session
from ramparts.identity import views as identity_views
from ramparts.identity.auth import BearerAuthenticator, actor_of
from ramparts.identity.clients import ServiceClients
from ramparts.identity.federation import Federation
from ramparts.identity.flow import FlowCodec, FlowStore
from ramparts.identity.lockout import Lockout
from ramparts.identity.login import Authenticator
from ramparts.identity.models import ADMIN_ROLE
from ramparts.identity.oauth import KeyCache, OAuthService
from ramparts.identity.passkeys import Passkeys
from ramparts.identity.tokens import TokenIssuer, TokenVerifier, overlap_for
from ramparts.identity.views import IdentityHttp
from ramparts.identity.views import directory as directory_views
from ramparts.payments import webhooks as psp_webhooks
from ramparts.payments.browser import psp_page_sources
from ramparts.payments.connection import PspConnection
from ramparts.payments.psp_events import PspEvents
from ramparts.payments.webhook_secrets import WebhookSecrets
from ramparts.policy.engine import PolicyAction, RuntimeAction, Target
from ramparts.policy.services import Authorizer, TenantRegions
from ramparts.routes import declares
from ramparts.web import (
    account_pages,
    admin_pages,
    approvals_pages,
    assistant,
    health,
    metrics,
    pages,
    pay,
)
from ramparts.web.errors import install_error_handlers
from ramparts.web.gate import PermissionGate
from ramparts.web.metrics import ScrapeAccess
from ramparts.web.middleware import (
    CatchAllMiddleware,
    EdgeMiddleware,
    HeadMiddleware,
    PublicHostMiddleware,
    RequestRulesMiddleware,
    RequestTransactionMiddleware,
    StrictCORSMiddleware,
    psp_page_policy,
)
from ramparts.web.openapi import install_openapi
from ramparts.web.page import PageKit
from ramparts.web.page_errors import install_page_handlers
from ramparts.web.pages import WEB_CLIENT_ID
from ramparts.web.sessions import BrowserSessions
from ramparts.web.telemetry import RouteRecorderMiddleware, TelemetryMiddleware

__all__ = ["create_app", "identity_services"]

STATIC = Path(__file__).parent / "static"
#: How often the server signs checkpoints of the chains that moved (`ramparts audit
#: checkpoint` signs on demand).
CHECKPOINT_SECONDS = 300

log = structlog.get_logger(__name__)


def identity_services(
    settings: Settings, database: Database, kms: Kms, fields: SealedFields, audit: AuditLog
) -> IdentityHttp:
    issuer = settings.public_url
    audience = f"{issuer}/api"
    key = server_secret(settings, kms).get_secret_value().encode()
    tokens = TokenIssuer(
        issuer=issuer,
        audience=audience,
        access_seconds=settings.access_token_seconds,
        kms=kms,
    )
    keys = KeyCache(database, overlap=overlap_for(settings.access_token_seconds))
    oauth = OAuthService(
        database,
        tokens,
        keys,
        audit,
        family_lifetime=timedelta(seconds=settings.refresh_family_seconds),
    )
    address_key = hashlib.sha256(b"ramparts login throttle" + key).digest()
    lockout = Lockout(database, address_key, audit)
    verifier = TokenVerifier(issuer=issuer, audience=audience)
    flows = FlowCodec(key)
    return IdentityHttp(
        issuer=issuer,
        oauth=oauth,
        authenticator=Authenticator(database, fields, audit, lockout),
        flows=flows,
        flow_store=FlowStore(database, flows),
        keys=keys,
        verifier=verifier,
        bearer=BearerAuthenticator(verifier, keys, oauth, audit, database),
        passkeys=Passkeys(database, fields, audit, lockout, public_url=issuer),
        services=ServiceClients(
            database, tokens, keys, audit, token_endpoint=f"{issuer}/oauth/token"
        ),
        federation=Federation(database, fields, audit, redirect_uri=f"{issuer}/login/sso/callback"),
        audit=audit,
    )


def _admin_reader(
    bearer: BearerAuthenticator, authorizer: Authorizer, action: PolicyAction, detail: str
) -> Callable[..., Awaitable[Actor]]:
    """A tenant-wide read's dependency (its audit trail, its users): the caller, once Cedar
    allows `action` on its tenant's resource (the allow commits with the read)."""

    async def reader(
        request: Request, session: Annotated[AsyncSession, Depends(request_session)]
    ) -> Actor:
        principal = await bearer(request)
        tenant = str(principal.tenant_id)
        context = await authorizer.context(principal, ui_client=WEB_CLIENT_ID, session=session)
        target = Target(action.entity_type, tenant, tenant, "confidential")
        await authorizer.require(principal, action, target, context, session=session, detail=detail)
        return actor_of(principal)

    return reader


async def _sign_checkpoints(checkpointer: Checkpointer) -> None:
    """Sign every chain that moved, every CHECKPOINT_SECONDS, for as long as the app runs."""
    while True:
        await asyncio.sleep(CHECKPOINT_SECONDS)
        try:
            await checkpointer.sign_all()
        except Exception:
            log.exception("audit_checkpoints_failed")


def create_app(  # noqa: PLR0915 - the one place the app is wired
    settings: Settings,
    database: Database,
    kms: Kms,
    *,
    audit_database: Database | None = None,
    model: Model | None = None,
    endpoints: Sequence[ModelEndpoint] | None = None,
    apps: Sequence[App] | None = None,
) -> FastAPI:
    """Build the app around a runtime-role `Database`; the app disposes it on shutdown, and
    `audit_database` too (`serve` sizes both pools; default: a small pool of its own).

    The apps served are `apps`, or those `RAMPARTS_APPS` names (`ramparts.apps`): their routes
    behind the permission gate, their tools in the assistant's registry.

    The assistant's model is what `RAMPARTS_MODEL` says, unless the app brings its own:
    `model`, an adapter in the region `RAMPARTS_MODEL_REGION` says, or `endpoints`, each
    naming its region. Either way the gateway's checks stand in front of it. The gateway and
    its approvals are `app.state.gateway` and `app.state.approvals`, the ones the routes use."""
    if model is not None and endpoints is not None:
        raise TypeError("create_app takes model= or endpoints=, not both")
    if endpoints is None:
        endpoints = endpoints_for(settings, kms, model=model)
    plugged_in = selected_apps(settings.apps) if apps is None else list(apps)

    # Its own small pool for what is written apart (refusals; apps' `AppServices.apart`, such
    # as declined payment attempts), so a request that holds a connection never waits on the
    # same pool to record what must outlive its rollback.
    if audit_database is None:
        audit_database = Database(
            database.engine.url, pool_size=2, transaction_pooler=database.transaction_pooler
        )
    audit = AuditLog(audit_database, audit_redactor(settings, kms))
    checkpointer = Checkpointer(database, kms)
    sequencer = Sequencer(database, max_lag_seconds=settings.audit_max_lag_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background = [
            asyncio.create_task(_sign_checkpoints(checkpointer)),
            asyncio.create_task(sequencer.run()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            # The alerts' POSTs under way finish (within their timeout) as the PSP client closes.
            await asyncio.gather(psp.aclose(), app.state.gateway.alerter.aclose())
            await app.state.pages.aclose()
            await audit_database.dispose()
            await database.dispose()
            app.state.limiter.close()

    fields = SealedFields(DataKeys(kms))  # one data key cache for the whole app
    identity = identity_services(settings, database, kms, fields, audit)
    authorizer = Authorizer(policy_engine(plugged_in), audit, TenantRegions(database))
    # Every route, whoever registers it, first passes the gate: permission before validation.
    gate = PermissionGate(identity.bearer, authorizer, audit, ui_client=WEB_CLIENT_ID)
    # No Swagger/ReDoc pages: they need inline script and third-party CDNs, which the CSP
    # forbids. The OpenAPI document itself stays at /openapi.json.
    app = FastAPI(
        title="Ramparts",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        debug=False,
        lifespan=lifespan,
        dependencies=[Depends(gate)],
    )
    app.state.database = database
    app.state.schema = ExpectedSchema(migration_branches(plugged_in))
    app.state.audit = audit
    app.state.checkpointer = checkpointer
    install_error_handlers(app)
    install_page_handlers(app)
    app.state.authorizer = authorizer
    # Routes are matched in the order they are added: the busiest API first (no two routers
    # share a path, so the order changes only how soon a request finds its route).
    psp = PspConnection(kms, api_base=settings.psp_api_base)
    services = AppServices(
        database, identity.bearer, authorizer, audit, fields, psp, settings, audit_database
    )
    plugged_routers = [r for a in plugged_in for r in app_routers(a, services)]
    for router in plugged_routers:
        app.include_router(router)
    app.include_router(
        audit_views.build_router(
            audit,
            _admin_reader(
                identity.bearer,
                authorizer,
                RuntimeAction.AUDIT_READ,
                "reading the audit trail needs admin",
            ),
            declares(RuntimeAction.AUDIT_READ),
            database,
        )
    )
    app.include_router(
        directory_views.build_router(
            _admin_reader(
                identity.bearer, authorizer, RuntimeAction.USERS_READ, "listing users needs admin"
            ),
            declares(RuntimeAction.USERS_READ),
        )
    )
    _install_operations(app, settings, database)
    app.include_router(psp_webhooks.build_router(WebhookSecrets(kms), PspEvents(database)))
    identity_views.install(app, identity)
    _install_assistant(
        app,
        settings,
        services,
        endpoints=endpoints,
        apps=plugged_in,
    )
    plugged_pages = _install_pages(app, settings, services, identity, plugged_in)
    _refuse_shadowing(app, [*plugged_routers, *plugged_pages])
    install_openapi(app)
    _add_middleware(app, settings)
    return app


def _install_operations(app: FastAPI, settings: Settings, database: Database) -> None:
    """What orchestrators and scrapers call: the probes and /metrics."""
    app.include_router(health.router)
    app.include_router(
        metrics.build_router(ScrapeAccess.from_settings(settings), OperationsGauges(database))
    )


#: The runtime's own links; an app's come between Home and these (`App.nav`).
RUNTIME_NAV = (
    NavLink("Approvals", "/app/approvals"),
    NavLink("Admin", "/app/admin", (ADMIN_ROLE,)),
    NavLink("Account", "/app/account"),
)


def _install_pages(
    app: FastAPI,
    settings: Settings,
    services: AppServices,
    identity: IdentityHttp,
    apps: Sequence[App],
) -> list[APIRouter]:
    """The web app: its sessions, templates and navigation (`app.state.pages`), the apps'
    pages and the runtime's; the apps' page routers."""
    app.state.pages = PageKit(
        sessions=BrowserSessions(services.database, identity.oauth, client_id=WEB_CLIENT_ID),
        public_url=settings.public_url,
        nav=[
            NavLink("Home", "/app"),
            *(link for a in apps for link in a.nav),
            *RUNTIME_NAV,
        ],
        app_templates={a.name: a.templates for a in apps if a.templates is not None},
        app_titles=[a.title for a in apps],
        cookie_secure=identity.secure_cookies,
        panel=assistant.panel_context,
    )
    plugged = [r for a in apps for r in a.pages(services)]
    runtime = [
        pages.router,
        pay.router,
        assistant.router,
        approvals_pages.router,
        admin_pages.router,
        account_pages.router,
    ]
    for router in [*plugged, *runtime]:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return plugged


def _answered(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, str]]:
    """Each (method, path) the routes answer, through included routers."""
    for route in routes:
        if isinstance(route, Route | APIRoute):
            for method in sorted(route.methods or ()):
                yield method, route.path
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _answered(included.routes)


def _refuse_shadowing(app: FastAPI, plugged: Sequence[APIRouter]) -> None:
    """An app's route may not answer what another route answers: matched first, it would
    take over the runtime's (a sign-in, an approval) or another app's."""
    everything = Counter(_answered(app.routes))
    for method, path in _answered(route for r in plugged for route in r.routes):
        if everything[method, path] > 1:
            raise AppError(f"{method} {path} is answered twice: an app's route shadows another")


def _install_assistant(
    app: FastAPI,
    settings: Settings,
    services: AppServices,
    *,
    endpoints: Sequence[ModelEndpoint],
    apps: Sequence[App],
) -> None:
    """The AI tool gateway with the apps' tools, its approvals and their routes; the services
    on `app.state`."""
    limiter = Limiter(
        settings.redis_url.get_secret_value() if settings.redis_url else None,
        AssistantLimits(
            user_rate=settings.ai_user_rate,
            tenant_rate=settings.ai_tenant_rate,
            user_tokens=settings.ai_user_tokens,
            tenant_tokens=settings.ai_tenant_tokens,
            throttle_after=settings.ai_throttle_after,
            lock_after=settings.ai_lock_after,
        ),
    )
    registry = ToolRegistry()
    for plugged in apps:
        plugged.tools(registry, services)
    app.state.tools = registry
    app.state.limiter = limiter
    database, authorizer, audit = services.database, services.authorizer, services.audit
    conversations = Conversations(services.fields)
    gateway = Gateway(
        database,
        registry,
        authorizer,
        conversations,
        audit,
        endpoints=list(endpoints),
        limiter=limiter,
        kill_switch=KillSwitch(),
        ui_client=WEB_CLIENT_ID,
        calls_per_message={
            Risk.READ: settings.ai_read_calls_per_message,
            Risk.WRITE: settings.ai_write_calls_per_message,
            Risk.HIGH: settings.ai_high_calls_per_message,
        },
        max_steps=settings.ai_max_steps,
        # Its POSTs go out beside the request that raised them: a slow receiver never holds
        # a user's answer; the lifespan waits for those under way.
        alerter=Alerter(settings.alert_webhook_url, in_background=True),
    )
    approvals = Approvals(
        database, registry, authorizer, conversations, audit, ui_client=WEB_CLIENT_ID
    )
    app.state.gateway = gateway  # an app's own routes reach the assistant here
    app.state.approvals = approvals
    app.include_router(
        ai_views.build_router(
            database,
            services.bearer,
            authorizer,
            gateway=gateway,
            approvals=approvals,
            audit=audit,
            ui_client=WEB_CLIENT_ID,
        )
    )


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Added innermost first. From the outside: telemetry, headers, catch-all, host, CORS,
    # catch-all, rules, HEAD as GET, the request's transaction, the route's recorder.
    app.add_middleware(RouteRecorderMiddleware)
    app.add_middleware(RequestTransactionMiddleware)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(
        RequestRulesMiddleware,
        max_body_bytes=settings.max_body_bytes,
        signed_body_paths=frozenset({psp_webhooks.WEBHOOK_PATH}),
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(StrictCORSMiddleware, origins=settings.cors_origins)
    app.add_middleware(PublicHostMiddleware, public_url=settings.public_url)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(
        EdgeMiddleware,
        hsts_max_age=settings.hsts_max_age,
        psp_page_policy=psp_page_policy(psp_page_sources(settings.psp_api_base)),
    )
    app.add_middleware(TelemetryMiddleware)
