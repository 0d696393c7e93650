"""An in-process world for the expenses app over a real PostgreSQL: the app's own database
(the runtime's migrations and the app's branch), the runtime's policies composed with the
app's, tenants with their people, and the assistant's gateway and approvals with a model
whose every turn is scripted (as compromised as a test wants it).

Shared by the tests beside it and by `bench/expenses_journeys.py`."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ramparts.ai.approvals import Approvals
from ramparts.ai.conversations import Conversations
from ramparts.ai.gateway import Gateway, ModelEndpoint
from ramparts.ai.killswitch import KillSwitch
from ramparts.ai.limits import AssistantLimits, Limiter
from ramparts.ai.models import ModelTurn, ToolCall
from ramparts.ai.tools import Tool, ToolRegistry
from ramparts.apps import App, app_roles, installed_apps, migration_branches, policy_engine
from ramparts.audit.services import AuditLog
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.db.migrate import upgrade
from ramparts.detectors import Redactor
from ramparts.identity.auth import Principal
from ramparts.identity.services import Provisioning, TenantRecord
from ramparts.policy.services import Authorizer, TenantRegions
from ramparts.web.pages import WEB_CLIENT_ID

from ramparts_expenses.app import EXPENSES
from ramparts_expenses.roles import APPROVER, EMPLOYEE, FINANCE
from ramparts_expenses.services import Expense, ExpenseService, NewExpense
from ramparts_expenses.tools import expense_tools

__all__ = [
    "PEOPLE",
    "Script",
    "Tenant",
    "World",
    "call",
    "migrate",
    "open_world",
]

REDACTOR = Redactor(b"expenses tests: redaction key, not a secret")
PLENTY = "100000/minute"
UNLIMITED = AssistantLimits(
    user_rate=PLENTY, tenant_rate=PLENTY, user_tokens=PLENTY, tenant_tokens=PLENTY
)
#: Everyone a test tenant has, by name, with their roles: two of each role, and a manager who
#: both claims and approves (never their own).
PEOPLE: dict[str, tuple[str, ...]] = {
    "employee": (EMPLOYEE,),
    "colleague": (EMPLOYEE,),
    "approver": (APPROVER,),
    "approver2": (APPROVER,),
    "finance": (FINANCE,),
    "finance2": (FINANCE,),
    "manager": (EMPLOYEE, APPROVER),
}


def migrate(urls: DatabaseUrls, app: App = EXPENSES) -> None:
    """The runtime's migrations and the app's branch (the database may hold other installed
    apps' branches too)."""
    others = [other for other in installed_apps().values() if other.name != app.name]
    upgrade(urls, migration_branches([app]), installed=migration_branches(others))


def call(name: str, **arguments: Any) -> ModelTurn:
    return ModelTurn(None, (ToolCall(name, arguments),))


class Script:
    """A model that says exactly what it is told, one turn per model call (then "done"), and
    keeps what it was offered and shown: a fully compromised model is one whose script an
    attacker wrote."""

    name = "script"

    def __init__(self, *turns: ModelTurn) -> None:
        self._turns = list(turns)
        self.offered: list[str] = []
        self.seen: list[list[dict[str, Any]]] = []

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        self.offered = [tool["function"]["name"] for tool in tools]
        self.seen.append(list(messages))
        return self._turns.pop(0) if self._turns else ModelTurn("done")


@dataclass
class Tenant:
    record: TenantRecord
    people: dict[str, Principal]

    @property
    def id(self) -> uuid.UUID:
        return self.record.id


@dataclass
class World:
    owner: Database
    database: Database
    kms: Kms
    fields: SealedFields
    audit: AuditLog
    authorizer: Authorizer
    registry: ToolRegistry
    provisioning: Provisioning
    tenants: list[Tenant] = field(default_factory=list)

    async def tenant(self, region: str = "eu") -> Tenant:
        """A fresh tenant with `PEOPLE`, each signed in with a second factor just now."""
        slug = f"exp-{secrets.token_hex(4)}"
        record = await self.provisioning.ensure_tenant(slug=slug, name=slug, region=region)
        people = {}
        for name, roles in PEOPLE.items():
            user = await self.provisioning.set_user(
                record,
                username=f"{name}@{slug}.test",
                display_name=name.title(),
                password=secrets.token_urlsafe(16),
                roles=roles,
            )
            people[name] = principal(record, user, roles)
        made = Tenant(record, people)
        self.tenants.append(made)
        return made

    def gateway(self, model: Script, *, gateway: type[Gateway] = Gateway) -> Gateway:
        return gateway(
            self.database,
            self.registry,
            self.authorizer,
            Conversations(self.fields),
            self.audit,
            endpoints=[ModelEndpoint("script", "local", model)],
            limiter=Limiter(None, UNLIMITED),
            kill_switch=KillSwitch(),
            ui_client=WEB_CLIENT_ID,
        )

    def approvals(self) -> Approvals:
        return Approvals(
            self.database,
            self.registry,
            self.authorizer,
            Conversations(self.fields),
            self.audit,
            ui_client=WEB_CLIENT_ID,
        )

    async def claim(
        self,
        tenant: Tenant,
        who: str,
        *,
        description: str = "Taxi to the airport",
        amount_minor: int = 4_250,
        iban: str = "DE89370400440532013000",
        receipt: str = "City Cabs, fare 42.50 EUR",
        approved_by: str | None = None,
    ) -> Expense:
        """A claim `who` submitted (through the service, as the API does), approved when told."""
        employee = tenant.people[who].user_id
        assert employee is not None
        async with self.database.tenant_session(tenant.id) as session:
            expenses = ExpenseService(session, self.fields)
            new = NewExpense(description, amount_minor, "EUR", iban, receipt_text=receipt)
            claim = await expenses.submit(tenant.id, employee, new)
            if approved_by is not None:
                approver = tenant.people[approved_by].user_id
                assert approver is not None
                claim = await expenses.approve(claim, approver)
            return claim

    async def read(self, tenant: Tenant, expense_id: uuid.UUID) -> tuple[Expense, str]:
        """The claim as stored now, and the account it pays to, opened."""
        async with self.database.tenant_session(tenant.id) as session:
            expenses = ExpenseService(session, self.fields)
            found = await expenses.get(tenant.id, expense_id)
            assert found is not None
            return found, await expenses.payee_iban(found)

    async def close(self) -> None:
        await self.database.dispose()
        await self.owner.dispose()


def principal(record: TenantRecord, user: uuid.UUID, roles: Sequence[str]) -> Principal:
    """A person signed in with a password and TOTP just now, through an API client."""
    return Principal(
        subject=str(user),
        user_id=user,
        tenant_id=record.id,
        roles=tuple(roles),
        amr=("pwd", "otp"),
        acr="mfa",
        client_id="expenses-tests",
        scope="openid",
        jti=uuid.uuid4(),
        auth_time=datetime.now(UTC),
    )


def registry_of(
    fields: SealedFields, change: Callable[[Tool], Tool] = lambda tool: tool
) -> ToolRegistry:
    """The app's tools with the world's keys (each passed through `change`)."""
    plain = ToolRegistry()
    expense_tools(fields)(plain)
    registry = ToolRegistry()
    for tool in plain:
        registry.register(change(tool))
    return registry


async def open_world(
    urls: DatabaseUrls, kms: Kms, *, change: Callable[[Tool], Tool] = lambda tool: tool
) -> World:
    """The world over a database `migrate` brought up; `change` rewrites each tool as
    registered (a benchmark compares declarations)."""
    owner = Database(urls.owner, pool_size=2)
    database = Database(urls.app, pool_size=4)
    audit = AuditLog(database, REDACTOR)
    fields = SealedFields(DataKeys(kms))
    provisioning = Provisioning(
        owner,
        kms,
        AuditLog(owner, REDACTOR),
        roles=app_roles([EXPENSES]),
        app_columns=EXPENSES.encrypted_columns,
    )
    return World(
        owner=owner,
        database=database,
        kms=kms,
        fields=fields,
        audit=audit,
        authorizer=Authorizer(policy_engine([EXPENSES]), audit, TenantRegions(database)),
        registry=registry_of(fields, change),
        provisioning=provisioning,
    )


def with_trusted(trusted: frozenset[str]) -> Callable[[Tool], Tool]:
    """Every tool declaring `trusted` instead of its own (a benchmark's naive app)."""
    return lambda tool: replace(tool, trusted=trusted)
