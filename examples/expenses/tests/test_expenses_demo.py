"""The demo: its people hold only the app's roles, and its sample claims are seeded once per
tenant, their accounts sealed (a re-run leaves them alone)."""

from __future__ import annotations

import secrets

import pytest
from ramparts.apps import App
from sqlalchemy import select

from ramparts_expenses.app import EXPENSES
from ramparts_expenses.demo import POISONED_RECEIPT, seed_expenses
from ramparts_expenses.models import EXPENSES as TABLE
from ramparts_expenses.roles import EMPLOYEE
from world import World

pytestmark = pytest.mark.anyio


def test_the_demo_people_hold_the_apps_roles() -> None:
    assert isinstance(EXPENSES, App)
    assert EXPENSES.demo is not None
    held = {role for _, _, roles in EXPENSES.demo.users for role in roles}
    assert held == set(EXPENSES.roles)


async def test_the_sample_claims_are_seeded_once_and_sealed(world: World) -> None:
    tenant = await world.tenant()
    await world.provisioning.set_user(
        tenant.record,
        username=f"employee2@{tenant.record.slug}.test",
        display_name="Employee 2",
        password=secrets.token_urlsafe(16),
        roles=(EMPLOYEE,),
    )
    for _ in range(2):
        await seed_expenses(world.owner, tenant.record, world.fields)
    async with world.database.tenant_session(tenant.id) as session:
        rows = (await session.execute(select(TABLE.c.id, TABLE.c.receipt_text))).all()
    assert len(rows) == 3
    [poisoned] = [row.id for row in rows if row.receipt_text == POISONED_RECEIPT]
    _, iban = await world.read(tenant, poisoned)
    assert iban == "DE89370400440532013000"
