"""`ramparts psp sandbox pay`, run as a developer runs it: a subprocess paying a payment at a
running sandbox, as its payer's browser would."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments.psp import API_KEY_SECRET, StripePsp
from ramparts.payments.records import Payment
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from tests.conftest import cli_kms
from tests.payments.helpers import attempts, new_payment, stored_payment
from tests.payments.test_idempotency import new_tenant
from tests.test_cli import owner_env, run

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(urls.app, pool_size=2)
    yield db
    await db.dispose()


@pytest.fixture
def env(tmp_path: Path, urls: DatabaseUrls, sandbox: Sandbox) -> dict[str, str]:
    """A developer's shell: the database, the running sandbox, the PSP key in the local KMS."""
    cli_kms(tmp_path).write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    return owner_env(tmp_path, urls, RAMPARTS_PSP_API_BASE=sandbox.api_base)


async def _payment(urls: DatabaseUrls, database: Database, psp: StripePsp) -> Payment:
    return await new_payment(database, psp, new_tenant(urls), uuid.uuid4(), amount=2_500)


async def test_a_visa_card_pays_through_the_psp(
    env: dict[str, str], urls: DatabaseUrls, database: Database, psp: StripePsp
) -> None:
    payment = await _payment(urls, database, psp)

    paid = run("psp", "sandbox", "pay", str(payment.id), "--card", "visa", "--json", env=env)

    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout) == {
        "payment_id": str(payment.id),
        "psp_id": payment.psp_id,
        "status": "processing",
        "card": "visa",
    }
    assert stored_payment(urls, payment.id)["status"] == "processing"
    assert payment.psp_id is not None
    tenant = stored_payment(urls, payment.id)["tenant_id"]
    assert (await psp.retrieve_payment_intent(tenant, payment.psp_id)).status == "succeeded"
    [attempt] = attempts(urls, tenant)
    assert attempt["outcome"] == "succeeded"
    # Without --json, one line for people.
    other = await _payment(urls, database, psp)
    line = run("psp", "sandbox", "pay", str(other.id), env=env)
    assert line.returncode == 0, line.stderr
    assert f"payment {other.id} ({other.psp_id}): processing" in line.stdout


async def test_3ds_authenticates_at_the_sandbox_unless_told_not_to(
    env: dict[str, str], urls: DatabaseUrls, database: Database, psp: StripePsp
) -> None:
    waiting = await _payment(urls, database, psp)
    stopped = run(
        "psp",
        "sandbox",
        "pay",
        str(waiting.id),
        "--card",
        "3ds",
        "--no-authenticate",
        "--json",
        env=env,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["status"] == "requires_action"
    assert stored_payment(urls, waiting.id)["status"] == "requires_action"

    authenticated = await _payment(urls, database, psp)
    tenant = stored_payment(urls, authenticated.id)["tenant_id"]
    slug = f"idem-{tenant.hex[:12]}"
    done = run(
        "psp",
        "sandbox",
        "pay",
        str(authenticated.id),
        "--card",
        "3ds",
        "--tenant",
        slug,
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "processing"  # paid once the worker confirms
    assert authenticated.psp_id is not None
    assert (await psp.retrieve_payment_intent(tenant, authenticated.psp_id)).status == "succeeded"
    assert stored_payment(urls, authenticated.id)["confirmed_at"] is None


async def test_a_declined_card_fails_in_one_line_and_counts(
    env: dict[str, str], urls: DatabaseUrls, database: Database, psp: StripePsp
) -> None:
    payment = await _payment(urls, database, psp)

    declined = run("psp", "sandbox", "pay", str(payment.id), "--card", "declined", env=env)

    assert declined.returncode == 1
    lines = declined.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ramparts: error: card-declined: ")
    assert "0341" not in declined.stderr + declined.stdout
    tenant = stored_payment(urls, payment.id)["tenant_id"]
    assert [a["outcome"] for a in attempts(urls, tenant)] == ["declined"]
    # Velocity applies as on the route: one card, tried past its limit.
    tight = {**env, "RAMPARTS_VELOCITY_CARD_ATTEMPTS_PER_HOUR": "1"}
    again = run("psp", "sandbox", "pay", str(payment.id), "--card", "declined", env=tight)
    assert again.returncode == 1
    assert "velocity-limit" in again.stderr


def test_refusals(
    env: dict[str, str], tmp_path: Path, urls: DatabaseUrls, sandbox: Sandbox
) -> None:
    for profile in ("prod", "stage"):
        refused = run(
            "psp", "sandbox", "pay", str(uuid.uuid4()), env={**env, "RAMPARTS_PROFILE": profile}
        )
        assert refused.returncode == 2
        assert refused.stderr.strip() == (
            f"ramparts: error: psp sandbox pay is for the dev profile only (this is {profile})"
        )
    unknown = run("psp", "sandbox", "pay", str(uuid.uuid4()), env=env)
    assert unknown.returncode == 2
    assert "no payment" in unknown.stderr
    no_sandbox = {k: v for k, v in env.items() if k != "RAMPARTS_PSP_API_BASE"}
    assert run("psp", "sandbox", "pay", str(uuid.uuid4()), env=no_sandbox).returncode == 2
    no_key = owner_env(tmp_path / "elsewhere", urls, RAMPARTS_PSP_API_BASE=sandbox.api_base)
    keyless = run("psp", "sandbox", "pay", str(uuid.uuid4()), env=no_key)
    assert keyless.returncode == 1
    assert keyless.stderr.strip().splitlines() == [
        "ramparts: error: the KMS holds no PSP API key (psp/stripe/api-key)"
    ]
    helped = run("psp", "sandbox", "pay", "--help", env=env)
    assert helped.returncode == 0
    assert "--card" in helped.stdout
    assert "--json" in helped.stdout
