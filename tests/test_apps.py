"""The App contract (`ramparts.apps`): apps are found through their entry points, chosen with
RAMPARTS_APPS, and only what the chosen apps declare is served."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import JSONResponse

from ramparts.apps import (
    ENTRY_POINT_GROUP,
    App,
    AppDemo,
    AppError,
    AppServices,
    app_roles,
    installed_apps,
    policy_fragment,
    selected_apps,
)
from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.demo import demo_users
from ramparts.policy.engine import PolicyError
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.app import QUOTES
from ramparts.quotes.roles import BUYER
from ramparts.routes import Exempt, declares
from ramparts.web.app import create_app
from tests.conftest import cli_env
from tests.identity.helpers import bearer, obtain_tokens, provision
from tests.test_cli import RAMPARTS

#: Not an App, for an entry point that names the wrong thing.
NOT_AN_APP = object()
#: An App whose name its entry point does not carry.
MISNAMED = App(name="other", title="Other")


def _entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_the_quote_app_is_installed_through_its_entry_point() -> None:
    assert installed_apps()["quotes"] is QUOTES
    assert selected_apps(("quotes",)) == [QUOTES]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_entry("bad", "tests.test_apps:NOT_AN_APP")], "is not a ramparts.apps.App"),
        ([_entry("mine", "tests.test_apps:MISNAMED")], "names an App called 'other'"),
        ([_entry("gone", "tests.no_such_module:APP")], "app gone: cannot be loaded"),
        (
            [_entry("quotes", "ramparts.quotes.app:QUOTES")] * 2,
            "two installed packages publish an app called 'quotes'",
        ),
    ],
)
def test_an_app_that_cannot_be_loaded_is_named(entries: list[EntryPoint], message: str) -> None:
    with pytest.raises(AppError, match=message):
        installed_apps(entries)


#: Two apps for the default selection: one that says it is a default, one that does not.
DEFAULT_APP = App(name="first", title="First", default=True)
OPTIONAL_APP = App(name="second", title="Second")


def test_unset_apps_are_the_installed_defaults_and_an_explicit_list_is_kept() -> None:
    installed = [
        _entry("second", "tests.test_apps:OPTIONAL_APP"),
        _entry("first", "tests.test_apps:DEFAULT_APP"),
    ]
    assert selected_apps(None, installed) == [DEFAULT_APP]
    assert selected_apps(("second",), installed) == [OPTIONAL_APP]
    assert selected_apps((), installed) == []
    assert Settings().apps is None  # unset: no app is named by the runtime
    assert Settings(apps="second, first").apps == ("second", "first")  # type: ignore[arg-type]
    assert Settings(apps="").apps == ()  # type: ignore[arg-type]


def test_roles_of_apps_are_theirs_and_admin_is_the_runtimes() -> None:
    assert app_roles([QUOTES, OPTIONAL_APP]) == {"admin", "buyer", "seller", "finance"}
    assert app_roles([]) == {"admin"}
    with pytest.raises(AppError, match="not the runtime's own 'admin'"):
        App(name="mine", title="Mine", roles=("admin",))
    with pytest.raises(AppError, match="role 'Boss' must be lowercase"):
        App(name="mine", title="Mine", roles=("Boss",))
    with pytest.raises(AppError, match="demo user 'ann' holds boss, not a role of the app"):
        App(
            name="mine",
            title="Mine",
            roles=("clerk",),
            demo=AppDemo(users=(("ann", "Ann", ("clerk", "boss")),)),
        )


def test_demo_users_of_two_apps_with_one_local_part_are_one_person() -> None:
    clerks = App(
        name="clerks",
        title="Clerks",
        roles=("clerk",),
        demo=AppDemo(users=(("ann", "Ann", ("clerk",)), ("admin", "Admin", ("clerk",)))),
    )
    auditors = App(
        name="auditors",
        title="Auditors",
        roles=("auditor", "clerk"),
        demo=AppDemo(users=(("ann", "Ann again", ("auditor", "clerk")),)),
    )
    assert demo_users([clerks, auditors]) == [
        ("ann", "Ann", ("clerk", "auditor")),
        ("admin", "Admin", ("clerk", "admin")),
    ]
    assert demo_users([]) == [("admin", "Administrator", ("admin",))]
    assert [local for local, _, _ in demo_users([QUOTES])] == [
        "buyer",
        "buyer2",
        "seller",
        "finance",
        "finance2",
        "admin",
    ]


def test_apps_are_chosen_by_name() -> None:
    installed = [_entry("quotes", "ramparts.quotes.app:QUOTES")]
    assert selected_apps((), installed) == []
    with pytest.raises(AppError, match=r"names nope, which is not installed \(installed: quotes\)"):
        selected_apps(("nope",), installed)
    with pytest.raises(AppError, match="names an app twice"):
        selected_apps(("quotes", "quotes"), installed)
    with pytest.raises(AppError, match="lowercase letters"):
        App(name="Quotes", title="Quotes")


def test_apps_list_reports_what_is_installed_and_served(tmp_path: Path) -> None:
    def listed(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RAMPARTS, "apps", "list", "--json"],
            env=cli_env(tmp_path, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # The dev environment installs the example app too (scripts/bootstrap dev); it is not a
    # default, so it is served only when named.
    served = json.loads(listed().stdout)["apps"]
    assert [(a["name"], a["served"], a["default"], a["roles"]) for a in served] == [
        ("expenses", False, False, ["employee", "approver", "finance"]),
        ("quotes", True, True, ["buyer", "seller", "finance"]),
    ]
    assert json.loads(listed().stdout)["shared_roles"] == {}
    both = json.loads(listed(RAMPARTS_APPS="quotes,expenses").stdout)
    assert [a["served"] for a in both["apps"]] == [True, True]
    # Roles are the tenant's: a role two served apps declare is one role with both apps' rights.
    assert both["shared_roles"] == {"finance": ["expenses", "quotes"]}
    assert [a["served"] for a in json.loads(listed(RAMPARTS_APPS="").stdout)["apps"]] == [
        False,
        False,
    ]
    refused = listed(RAMPARTS_APPS="quotes,nope")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.strip() == (
        "ramparts: error: RAMPARTS_APPS names nope, which is not installed "
        "(installed: expenses, quotes)"
    )


def test_only_the_chosen_apps_are_served(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    built: list[FastAPI] = []
    with_quotes = serve_app(built.append)
    without = serve_app(built.append, apps=(), host="localhost")  # its own cookies
    for server, status in ((with_quotes, 200), (without, 404)):
        buyer = provision(urls, kms, roles=(BUYER,))  # a TOTP code signs in once
        token = obtain_tokens(server, buyer)["access_token"]
        assert server.get("/api/quotes", headers=bearer(token)).status_code == status
    offered = [{tool.name for tool in app.state.tools} for app in built]
    assert offered[0] >= {"list_quotes", "draft_proposal"}
    assert offered[1] == set()


async def _leak(_: Request) -> JSONResponse:
    return JSONResponse({"served": "without the gate"})


def _plain_route(_: AppServices) -> list[APIRouter]:
    router = APIRouter()
    router.add_route("/api/leaky/export", _leak, methods=["GET"])
    return [router]


def _websocket(_: AppServices) -> list[APIRouter]:
    router = APIRouter()

    @router.websocket("/api/leaky/socket")
    async def socket(websocket: WebSocket) -> None:
        await websocket.close()

    return [router]


def _shadowing(_: AppServices) -> list[APIRouter]:
    router = APIRouter()

    @router.get("/healthz", openapi_extra=declares(Exempt.PUBLIC))
    async def shadow() -> dict[str, str]:
        return {"status": "an app's"}

    return [router]


@pytest.mark.parametrize(
    ("routers", "message"),
    [
        (_plain_route, "app leaky: /api/leaky/export is not an API route"),
        (_websocket, "app leaky: /api/leaky/socket is not an API route"),
        (_shadowing, "GET /healthz is answered twice: an app's route shadows another"),
    ],
)
def test_an_app_route_the_gate_would_not_guard_is_refused(
    urls: DatabaseUrls, kms: Kms, routers: Callable[[AppServices], list[APIRouter]], message: str
) -> None:
    settings = Settings(secret_key=secrets.token_urlsafe(32))  # type: ignore[call-arg]
    leaky = App(name="leaky", title="Leaky", routers=routers)
    database = Database(urls.app, pool_size=1)
    with pytest.raises(AppError, match=message):
        create_app(settings, database, kms, apps=[leaky])


def test_only_the_chosen_apps_are_imported() -> None:
    broken = _entry("broken", "tests.no_such_module:APP")
    assert selected_apps(("quotes",), [broken, _entry("quotes", "ramparts.quotes.app:QUOTES")]) == [
        QUOTES
    ]
    with pytest.raises(AppError) as refused:
        selected_apps(("broken",), [broken])
    # Named by its kind: an app's own message may hold a secret it was configured with.
    assert str(refused.value) == "app broken: cannot be loaded (ModuleNotFoundError)"


def test_the_engine_is_composed_from_the_served_apps(urls: DatabaseUrls, kms: Kms) -> None:
    """Cedar knows the actions of the apps served, and only theirs: a route of an app that is
    not served could not be authorized even if it were mounted."""
    settings = Settings(secret_key=secrets.token_urlsafe(32))  # type: ignore[call-arg]
    database = Database(urls.app, pool_size=1)
    with_quotes = create_app(settings, database, kms, apps=[QUOTES])
    without = create_app(settings, database, kms, apps=[])
    read = QuoteAction.QUOTE_READ
    assert with_quotes.state.authorizer.action(str(read)) is read
    assert with_quotes.state.authorizer.party_attributes(read.entity_type) == ("buyer", "seller")
    assert without.state.authorizer.action(str(read)) is None
    # Two apps claiming one Cedar namespace never compose: the app is not built.
    twin = replace(QUOTES, name="twin")
    with pytest.raises(PolicyError, match="app twin: namespace Quotes is already app quotes's"):
        create_app(settings, database, kms, apps=[QUOTES, twin])


def test_the_quote_app_brings_its_cedar() -> None:
    fragment = policy_fragment(QUOTES)
    assert fragment is not None
    assert fragment.namespace == "Quotes"
    assert fragment.actions == QuoteAction.ALL
    assert fragment.money_actions == (
        QuoteAction.DEPOSIT_CHARGE,
        QuoteAction.REFUND_ISSUE,
        QuoteAction.DISBURSEMENT_APPROVE,
    )
    assert fragment.money_roles == ("finance",)
    assert policy_fragment(App(name="bare", title="No Cedar")) is None
