"""The runtime's policies with the quote app's decide as the app needs: roles, tenants,
sensitivity, MFA, channel and region; and its reviewed snapshot says exactly what they
decide."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramparts.apps import policy_engine, policy_fragment
from ramparts.policy.compose import compose
from ramparts.policy.engine import (
    SENSITIVITIES,
    Channel,
    PolicyAction,
    RuntimeAction,
    Subject,
    Target,
)
from ramparts.policy.matrix import app_scope, changes, decide_all, read_snapshot
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.app import QUOTES


class A(QuoteAction, RuntimeAction):
    """Every action a quote user may ask for, by its short name."""


ACTIONS = (*QuoteAction.ALL, *RuntimeAction.ALL)
ENGINE = policy_engine([QUOTES])
FRAGMENT = policy_fragment(QUOTES)
assert FRAGMENT is not None

# What each role may do in its own tenant (internal data, TOTP, through the UI) on a quote it
# takes part in (it asked for it and answers it). Anything not listed is denied; in another
# tenant everything is denied. Quotes of other people: see test_quotes_have_owners.
ALLOWED: dict[str, set[PolicyAction]] = {
    "buyer": {
        A.QUOTE_LIST,
        A.QUOTE_READ,
        A.QUOTE_CREATE,
        A.QUOTE_UPDATE,
        A.QUOTE_DELETE,
        A.QUOTE_ACCEPT,
        A.PAYMENT_LIST,
        A.PAYMENT_READ,
        A.PAYMENT_PAY,
        A.ASSISTANT_APPROVE,
        A.MODEL_CALL,
    },
    "seller": {A.QUOTE_LIST, A.QUOTE_READ, A.QUOTE_SUBMIT, A.ASSISTANT_APPROVE, A.MODEL_CALL},
    "finance": {
        A.QUOTE_LIST,
        A.QUOTE_READ,
        A.DEPOSIT_CHARGE,
        A.REFUND_ISSUE,
        A.DISBURSEMENT_APPROVE,
        A.PAYMENT_LIST,
        A.PAYMENT_READ,
        A.LEDGER_READ,
        A.RECONCILIATION_READ,
        A.ASSISTANT_APPROVE,
        A.MODEL_CALL,
    },
    "admin": {
        A.QUOTE_LIST,
        A.QUOTE_READ,
        A.AUDIT_READ,
        A.USERS_READ,
        A.ASSISTANT_APPROVE,
        A.ASSISTANT_CONFIGURE,
        A.MODEL_CALL,
    },
    "none": set(),
}
OTP = frozenset({"pwd", "otp"})
WEBAUTHN = frozenset({"pwd", "hwk"})


def person(
    role: str, tenant: str = "acme", region: str = "eu", amr: frozenset[str] = OTP
) -> Subject:
    roles = frozenset() if role == "none" else frozenset({role})
    return Subject(f"{role}@{tenant}", tenant, region, roles, amr)


def thing(
    action: PolicyAction,
    tenant: str = "acme",
    sensitivity: str = "internal",
    region: str = "eu",
    *,
    parties: Subject | None = None,
) -> Target:
    """A resource; a quote whose buyer and seller are `parties`, a payment they pay (or
    nobody)."""
    mine: tuple[tuple[str, str], ...] = ()
    if parties is not None and action.entity_type == A.QUOTE_READ.entity_type:
        mine = (("buyer", parties.id), ("seller", parties.id))
    if parties is not None and action.entity_type == A.PAYMENT_READ.entity_type:
        mine = (("payer", parties.id),)
    return Target(action.entity_type, "r-1", tenant, sensitivity, region, mine)


@pytest.mark.parametrize("role", ALLOWED)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("relation", ["same tenant", "other tenant"])
def test_role_action_tenant_matrix(role: str, action: PolicyAction, relation: str) -> None:
    other = relation == "other tenant"
    subject = person(role)
    target = thing(
        action,
        tenant="globex" if other else "acme",
        region="us" if other else "eu",
        parties=subject,
    )
    decision = ENGINE.decide(subject, action, target, Channel.UI)
    assert decision.allowed is (action in ALLOWED[role] and not other), decision
    assert decision.errors == ()
    if other and action in ALLOWED[role]:
        # Denied by a named wall, not merely for want of a permit.
        assert decision.policy_ids[0].startswith(("tenant-boundary", "eu-data-stays-in-eu"))


def test_only_finance_moves_money_and_from_an_ai_tool_only_held_for_approval() -> None:
    for action in (A.DEPOSIT_CHARGE, A.REFUND_ISSUE, A.DISBURSEMENT_APPROVE):
        for role in ("buyer", "seller", "admin"):
            assert not ENGINE.decide(person(role), action, thing(action), Channel.UI).allowed
            # Nor may their model's call even wait for approval.
            held = ENGINE.decide(person(role), action, thing(action), Channel.AI_TOOL, True)
            assert not held.allowed
            assert "quotes-money-from-ai-tools-only-held" in held.policy_ids
        assert ENGINE.decide(person("finance"), action, thing(action), Channel.API).allowed
        refused = ENGINE.decide(person("finance"), action, thing(action), Channel.AI_TOOL)
        assert not refused.allowed
        assert refused.policy_ids == ("quotes-money-from-ai-tools-only-held",)
        # Finance's model's call may wait for a second Finance user: held, it is allowed.
        held = ENGINE.decide(person("finance"), action, thing(action), Channel.AI_TOOL, True)
        assert held.allowed
        assert held.policy_ids == ("finance-moves-money",)


def test_payments_are_read_by_finance_and_their_payer_and_paid_by_the_payer_only() -> None:
    payer, someone = person("buyer"), "another-user@acme"
    theirs = Target(A.PAYMENT_READ.entity_type, "p", "acme", parties=(("payer", someone),))
    mine = Target(A.PAYMENT_READ.entity_type, "p", "acme", parties=(("payer", payer.id),))
    for action in (A.PAYMENT_READ, A.PAYMENT_PAY):
        assert not ENGINE.decide(payer, action, theirs, Channel.UI).allowed
        assert ENGINE.decide(payer, action, mine, Channel.UI).allowed
    # Finance reads every payment and pays none; sellers and admins neither read nor pay.
    for target in (theirs, mine):
        assert ENGINE.decide(person("finance"), A.PAYMENT_READ, target, Channel.API).allowed
        assert not ENGINE.decide(person("finance"), A.PAYMENT_PAY, target, Channel.UI).allowed
        for role in ("seller", "admin", "none"):
            for action in (A.PAYMENT_LIST, A.PAYMENT_READ, A.PAYMENT_PAY):
                assert not ENGINE.decide(person(role), action, target, Channel.UI).allowed
    # Paying is the payer's own act: never through the assistant, never by a service.
    assert not ENGINE.decide(payer, A.PAYMENT_PAY, mine, Channel.AI_TOOL).allowed
    service = Subject(payer.id, "acme", "eu", frozenset({"buyer"}), OTP, service=True)
    assert not ENGINE.decide(service, A.PAYMENT_PAY, mine, Channel.SERVICE).allowed
    assert not ENGINE.decide(service, A.PAYMENT_READ, mine, Channel.SERVICE).allowed


def test_restricted_data_needs_webauthn() -> None:
    buyer = person("buyer")
    restricted = thing(A.QUOTE_READ, sensitivity="restricted", parties=buyer)
    refused = ENGINE.decide(buyer, A.QUOTE_READ, restricted, Channel.UI)
    assert not refused.allowed
    assert refused.policy_ids == ("restricted-needs-webauthn",)
    assert ENGINE.decide(
        person("buyer", amr=WEBAUTHN), A.QUOTE_READ, restricted, Channel.UI
    ).allowed
    for sensitivity in ("public", "internal", "confidential"):
        target = thing(A.QUOTE_READ, sensitivity=sensitivity, parties=buyer)
        assert ENGINE.decide(buyer, A.QUOTE_READ, target, Channel.UI).allowed


QUOTE_ACTIONS = [a for a in QuoteAction.ALL if a.resource_type == "Quote"]
QUOTE = A.QUOTE_READ.entity_type


def quote(buyer: str, seller: str | None = None) -> Target:
    parties = (("buyer", buyer),) + ((("seller", seller),) if seller is not None else ())
    return Target(QUOTE, "q", "acme", parties=parties)


# Inside one tenant: what a role may do on a quote of someone else (another buyer asked for
# it, another seller answers it), and on one still open to every seller.
ON_OTHERS: dict[str, set[PolicyAction]] = {
    "buyer": {A.QUOTE_LIST, A.QUOTE_CREATE},
    "seller": {A.QUOTE_LIST},
    "finance": {A.QUOTE_LIST, A.QUOTE_READ},
    "admin": {A.QUOTE_LIST, A.QUOTE_READ},
    "none": set(),
}
ON_OPEN = {**ON_OTHERS, "seller": {A.QUOTE_LIST, A.QUOTE_READ, A.QUOTE_SUBMIT}}


@pytest.mark.parametrize("role", ALLOWED)
@pytest.mark.parametrize("action", QUOTE_ACTIONS)
def test_quotes_have_owners(role: str, action: PolicyAction) -> None:
    subject, someone = person(role), "another-user@acme"
    theirs = quote(someone, someone)
    open_ = quote(someone)
    for target, allowed in ((theirs, ON_OTHERS), (open_, ON_OPEN)):
        decision = ENGINE.decide(subject, action, target, Channel.UI)
        assert decision.allowed is (action in allowed[role]), (target, decision)
        assert decision.errors == ()
    # Asked for by them, answered by us, and the other way round.
    answered = quote(someone, subject.id)
    asked = quote(subject.id, someone)
    sellers = {A.QUOTE_LIST, A.QUOTE_READ, A.QUOTE_SUBMIT}
    buyers = {A.QUOTE_LIST, A.QUOTE_CREATE, A.QUOTE_READ, A.QUOTE_UPDATE}
    buyers |= {A.QUOTE_DELETE, A.QUOTE_ACCEPT}
    as_seller = ENGINE.decide(subject, action, answered, Channel.UI).allowed
    as_buyer = ENGINE.decide(subject, action, asked, Channel.UI).allowed
    assert as_seller is (action in ON_OTHERS[role] | (sellers if role == "seller" else set()))
    assert as_buyer is (action in ON_OTHERS[role] | (buyers if role == "buyer" else set()))


def test_a_service_is_never_a_quotes_buyer_or_seller() -> None:
    service = Subject("svc", "acme", "eu", frozenset({"buyer", "seller"}), OTP, service=True)
    # Its client id may look like anything, a user id too: it is still not that user.
    mine = quote("svc", "svc")
    assert not ENGINE.decide(service, A.QUOTE_READ, mine, Channel.SERVICE).allowed


def test_the_policies_decide_exactly_as_the_reviewed_snapshot() -> None:
    """Change a policy without `ramparts policy snapshot` in the same change and this fails,
    listing every decision that moved."""
    scope = app_scope(FRAGMENT)
    moved = changes(read_snapshot(scope), decide_all(ENGINE, scope), scope)
    assert not moved, "decisions changed without an updated snapshot:\n" + "\n".join(
        f"  {c.cell.key}: {'allow' if c.old else 'deny'} -> {'allow' if c.new else 'deny'}"
        for c in moved
    )


tenants = st.sampled_from(["acme", "globex", "initech"])


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(list(ALLOWED)),
    extra_role=st.sampled_from(list(ALLOWED)),
    own=tenants,
    theirs=tenants,
    action=st.sampled_from([a for a in ACTIONS if a is not A.MODEL_CALL]),
    sensitivity=st.sampled_from(SENSITIVITIES),
    amr=st.sampled_from([OTP, WEBAUTHN, frozenset()]),
    channel=st.sampled_from(list(Channel)),
    service=st.booleans(),
)
def test_an_allow_never_crosses_tenants(
    role: str,
    extra_role: str,
    own: str,
    theirs: str,
    action: PolicyAction,
    sensitivity: str,
    amr: frozenset[str],
    channel: Channel,
    service: bool,
) -> None:
    roles = frozenset({role, extra_role} - {"none"})
    subject = Subject("p", own, "eu", roles, amr, service=service)
    target = thing(action, theirs, sensitivity, parties=subject)  # a quote of theirs is ours
    decision = ENGINE.decide(subject, action, target, channel)
    if decision.allowed:
        assert theirs == own


def test_remembered_decisions_are_the_fresh_ones() -> None:
    """`decide` remembers by request attributes, never ids (only which of them are the same
    user): it must agree with Cedar asked afresh, for every cell of the matrix and whatever
    the ids."""
    from ramparts.policy.matrix import _requests  # noqa: PLC0415

    engine = policy_engine([QUOTES])
    for cell, (subject, action, target, channel, held) in _requests(app_scope(FRAGMENT)):
        first = engine.decide(subject, action, target, channel, held)
        renamed = replace(subject, id="someone-else")
        parties = tuple(
            (name, renamed.id if user == subject.id else user) for name, user in target.parties
        )
        same_parties = replace(target, parties=parties)
        again = engine.decide(renamed, action, same_parties, channel, held)
        fresh = engine.evaluate(renamed, action, same_parties, channel, held)
        assert first == again == fresh, cell
        # Renaming only the caller makes them a stranger to the quote: decided afresh.
        stranger = engine.decide(renamed, action, target, channel, held)
        assert stranger == engine.evaluate(renamed, action, target, channel, held), cell


def test_a_policy_naming_an_entity_makes_ids_count() -> None:
    alice_only = (
        '\n@id("alice-only")\npermit (principal == User::"alice", '
        'action == Quotes::Action::"quote.read", resource);\n'
    )
    engine = compose([replace(FRAGMENT, policies=FRAGMENT.policies + alice_only)])
    target = thing(A.QUOTE_READ)
    alice = Subject("alice", "acme", "eu")
    bob = Subject("bob", "acme", "eu")
    assert engine.decide(alice, A.QUOTE_READ, target, Channel.UI).allowed
    assert not engine.decide(bob, A.QUOTE_READ, target, Channel.UI).allowed
