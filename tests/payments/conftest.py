"""Payments fixtures: one real localstripe process for the run, and the adapter pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import stripe
from pydantic import SecretStr

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.payments.psp import API_KEY_SECRET, StripePsp
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox
from tests.payments.reconciliation import World, fresh_database  # noqa: F401 - a fixture


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="session")
def psp_kms(kms: Kms) -> Kms:
    """The session KMS, holding the sandbox's API key where the adapter reads it."""
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    return kms


@pytest.fixture
async def psp(sandbox: Sandbox, psp_kms: Kms) -> AsyncIterator[StripePsp]:
    adapter = StripePsp.from_kms(psp_kms, api_base=sandbox.api_base)
    yield adapter
    await adapter.aclose()


@pytest.fixture
def buyer(sandbox: Sandbox) -> stripe.StripeClient:
    """What the buyer's browser does through Stripe.js: talk to the PSP directly."""
    return stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": sandbox.api_base})


@pytest.fixture
async def world(
    fresh_database: Callable[[], DatabaseUrls],  # noqa: F811 - the fixture
) -> AsyncIterator[World]:
    """Reconciliation's world: a fresh database and a fresh sandbox PSP of the test's own
    (`tests.payments.reconciliation`)."""
    with Sandbox() as sandbox:
        opened = World.open(fresh_database(), sandbox)
        yield opened
        await opened.close()
