"""The enforcement point records every decision, allow and deny, with the deciding policies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ramparts.apps import policy_engine
from ramparts.audit.events import Action
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.auth import Principal
from ramparts.policy.engine import Channel, Target
from ramparts.policy.services import Authorizer, RequestContext, TenantRegions
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.app import QUOTES
from tests.audit.trail import recorded
from tests.identity.helpers import TEST_REDACTOR

pytestmark = pytest.mark.anyio
REFUND, QUOTE = QuoteAction.REFUND_ISSUE.entity_type, QuoteAction.QUOTE_DELETE.entity_type


def principal(tenant: uuid.UUID, *roles: str) -> Principal:
    user = uuid.uuid4()
    return Principal(
        subject=str(user),
        user_id=user,
        tenant_id=tenant,
        roles=roles,
        amr=("pwd", "otp"),
        acr="urn:ramparts:acr:mfa",
        client_id="ramparts-web",
        scope="openid",
        jti=uuid.uuid4(),
        auth_time=datetime.now(UTC),
    )


async def test_allow_and_deny_are_both_on_the_record(urls: DatabaseUrls) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    database = Database(urls.app, pool_size=1)
    authorizer = Authorizer(
        policy_engine([QUOTES]), AuditLog(database, TEST_REDACTOR), TenantRegions(database)
    )
    context = RequestContext(Channel.API, region="eu")
    finance = principal(tenant, "finance")
    try:
        allowed = await authorizer.authorize(
            finance, QuoteAction.REFUND_ISSUE, Target(REFUND, "rf-1", str(tenant)), context
        )
        denied = await authorizer.authorize(
            finance, QuoteAction.REFUND_ISSUE, Target(REFUND, "rf-2", str(other)), context
        )
        buyer = principal(tenant, "buyer")
        async with database.tenant_session(tenant) as session:
            in_transaction = await authorizer.authorize(
                buyer,
                QuoteAction.QUOTE_DELETE,
                # the buyer's own
                Target(QUOTE, "q-1", str(tenant), parties=(("buyer", buyer.subject),)),
                context,
                session=session,
            )
    finally:
        await database.dispose()
    assert (allowed.allowed, denied.allowed, in_transaction.allowed) == (True, False, True)
    events = recorded(urls, tenant, Action.AUTHORIZATION_DECIDED)
    assert [(e["decision"], e["resource"]["id"], e["policy_ids"]) for e in events] == [
        ("allow", "rf-1", ["finance-moves-money"]),
        ("deny", "rf-2", ["tenant-boundary"]),
        ("allow", "q-1", ["buyer-quotes"]),
    ]
    assert events[1]["actor"]["id"] == finance.subject
    assert events[1]["details"]["action"] == "Quotes::refund.issue"
    assert events[1]["resource"]["type"] == "Quotes::Refund"
    # The attempt on the other tenant's refund is evidence in the caller's tenant, not theirs.
    assert recorded(urls, other, Action.AUTHORIZATION_DECIDED) == []
