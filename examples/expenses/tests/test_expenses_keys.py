"""Key rotation covers the app's sealed column: after the tenant's data key is rotated and
its fields re-encrypted, a payee's IBAN is under the new key and still opens."""

from __future__ import annotations

import pytest
from ramparts.crypto.fields import FieldCipher
from sqlalchemy import select

from ramparts_expenses.models import EXPENSES
from world import World

pytestmark = pytest.mark.anyio


async def versions(world: World, tenant_id: object) -> list[int]:
    async with world.database.tenant_session(tenant_id) as session:  # type: ignore[arg-type]
        sealed = await session.scalars(select(EXPENSES.c.sealed_payee_iban))
        return [FieldCipher.version_of(bytes(s)) for s in sealed]


async def test_rotation_reencrypts_the_payee_accounts(world: World) -> None:
    tenant = await world.tenant()
    claims = [
        await world.claim(tenant, "employee"),
        await world.claim(tenant, "colleague", iban="NL91 ABNA 0417 1643 00"),
    ]
    assert await versions(world, tenant.id) == [1, 1]
    assert await world.provisioning.rotate_data_key(tenant.record) == 2
    # Their TOTP secrets are not enrolled here: the two accounts are all there is to move.
    assert await world.provisioning.reencrypt(tenant.record) == 2
    assert await versions(world, tenant.id) == [2, 2]
    opened = [(await world.read(tenant, claim.id))[1] for claim in claims]
    assert opened == ["DE89370400440532013000", "NL91ABNA0417164300"]
    assert await world.provisioning.reencrypt(tenant.record) == 0  # nothing left on key 1
