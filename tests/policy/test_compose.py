"""Composing the runtime's Cedar with apps' fragments: what an app may bring, what it may not
(each refusal a `PolicyError` that says what is wrong), and the walls the runtime puts around
an app's money actions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ramparts.policy.compose import PolicyFragment, compose, money_walls
from ramparts.policy.engine import Channel, PolicyAction, PolicyError, Subject, Target

ORDER_READ = PolicyAction("order.read", "Order", "Shop")
ORDER_PAY = PolicyAction("order.pay", "Payment", "Shop")
SCHEMA = """
// A small shop, to compose with the runtime.
namespace Shop {
    entity Order = {
        tenant: String, sensitivity: String, customer?: User,
        address?: { street: String, tenant: Long },
    };
    entity Payment = { tenant: String, sensitivity: String };
    action "order.read"
        appliesTo { principal: [User, Service], resource: [Order], context: RequestContext };
    action "order.pay"
        appliesTo { principal: [User], resource: [Payment], context: RequestContext };
}
"""
POLICIES = """
@id("customers-read-their-orders")
permit (principal in Role::"customer", action == Shop::Action::"order.read", resource)
when { resource has customer && resource.customer == principal };
@id("everyone-pays")
permit (principal, action == Shop::Action::"order.pay", resource);
@id("customers-use-the-assistant")
permit (principal in Role::"customer", action == Action::"model.call", resource);
"""
SHOP = PolicyFragment(
    name="shop",
    namespace="Shop",
    schema=SCHEMA,
    policies=POLICIES,
    actions=(ORDER_READ, ORDER_PAY),
    money_actions=(ORDER_PAY,),
    money_roles=("cashier",),
    roles=("customer", "cashier"),
    parties={"Order": {"mine": {"customer": "me"}}},
)


def person(*roles: str, tenant: str = "acme") -> Subject:
    return Subject("u-1", tenant, "eu", frozenset(roles), frozenset({"pwd", "otp"}))


def payment(tenant: str = "acme") -> Target:
    return Target(ORDER_PAY.entity_type, "p-1", tenant)


def test_an_app_fragment_composes_with_the_runtime() -> None:
    engine = compose([SHOP])
    order = Target(ORDER_READ.entity_type, "o-1", "acme", parties=(("customer", "u-1"),))
    decision = engine.decide(person("customer"), ORDER_READ, order, Channel.UI)
    assert decision.allowed
    assert decision.policy_ids == ("customers-read-their-orders",)
    assert engine.party_attributes("Shop::Order") == ("customer",)
    assert engine.action("Shop::order.read") is ORDER_READ
    theirs = replace(order, tenant="globex")
    refused = engine.decide(person("customer", tenant="acme"), ORDER_READ, theirs, Channel.UI)
    assert not refused.allowed
    assert refused.policy_ids == ("tenant-boundary",)


def test_a_money_action_needs_a_money_role_even_with_a_permit() -> None:
    engine = compose([SHOP])
    assert engine.decide(person("cashier"), ORDER_PAY, payment(), Channel.API).allowed
    refused = engine.decide(person("customer"), ORDER_PAY, payment(), Channel.API)
    assert not refused.allowed
    assert refused.policy_ids == ("shop-money-needs-money-role",)


def test_a_money_action_from_an_ai_tool_is_denied_even_with_a_permit() -> None:
    refused = compose([SHOP]).decide(person("cashier"), ORDER_PAY, payment(), Channel.AI_TOOL)
    assert not refused.allowed
    assert refused.policy_ids == ("shop-money-from-ai-tools-only-held",)


def test_a_money_action_from_an_ai_tool_may_be_held_for_a_money_role_only() -> None:
    """The model's money call may wait as an approval request (`context.held`), and only a
    money role's: another role's is refused even with a permit."""
    engine = compose([SHOP])
    held = engine.decide(person("cashier"), ORDER_PAY, payment(), Channel.AI_TOOL, held=True)
    assert held.allowed
    assert held.policy_ids == ("everyone-pays",)
    refused = engine.decide(person("customer"), ORDER_PAY, payment(), Channel.AI_TOOL, held=True)
    assert not refused.allowed
    assert set(refused.policy_ids) == {
        "shop-money-needs-money-role",
        "shop-money-from-ai-tools-only-held",
    }
    # Held is the AI gateway's question on the ai_tool channel, never another channel's.
    with pytest.raises(ValueError, match="never held"):
        engine.decide(person("cashier"), ORDER_PAY, payment(), Channel.API, held=True)


def test_an_app_without_money_roles_moves_no_money() -> None:
    engine = compose([replace(SHOP, money_roles=())])
    assert not engine.decide(person("cashier"), ORDER_PAY, payment(), Channel.API).allowed
    held = engine.decide(person("cashier"), ORDER_PAY, payment(), Channel.AI_TOOL, held=True)
    assert not held.allowed
    assert money_walls(replace(SHOP, money_actions=())) == ""


def refused(message: str, *fragments: PolicyFragment) -> None:
    with pytest.raises(PolicyError) as caught:
        compose(fragments)
    assert message in str(caught.value), str(caught.value)


def test_a_permit_naming_another_namespace_s_action_is_refused() -> None:
    other = replace(SHOP, name="other", namespace="Other", schema=SCHEMA.replace("Shop", "Other"))
    other = replace(
        other,
        policies='@id("reads-the-shop")\npermit (principal, action == Shop::Action::"order.read"'
        ", resource);",
        actions=(replace(ORDER_READ, namespace="Other"),),
        money_actions=(),
        parties={},
    )
    refused(
        "app other: policy 'reads-the-shop' names Shop::Action::\"order.read\", outside its "
        "namespace Other",
        SHOP,
        other,
    )


def test_a_permit_may_grant_only_the_grantable_runtime_actions() -> None:
    audit = (
        '@id("customers-audit")\n'
        'permit (principal in Role::"customer", action == Action::"audit.read", resource);'
    )
    refused(
        "policy 'customers-audit' names Action::\"audit.read\", outside its namespace Shop",
        replace(SHOP, policies=POLICIES + audit),
    )


@pytest.mark.parametrize(
    ("principal", "who"),
    [("principal", "every principal"), ('principal in Role::"admin"', "role admin")],
)
def test_a_grantable_runtime_action_goes_only_to_the_app_s_roles(principal: str, who: str) -> None:
    grant = (
        '@id("all-use-the-assistant")\n'
        f'permit ({principal}, action == Action::"model.call", resource);'
    )
    refused(
        f"policy 'all-use-the-assistant' grants model.call to {who}",
        replace(SHOP, policies=POLICIES + grant),
    )


def test_a_permit_on_every_action_is_refused() -> None:
    everything = '@id("open-door")\npermit (principal in Role::"customer", action, resource);'
    refused(
        "app shop: policy 'open-door' applies to every action",
        replace(SHOP, policies=POLICIES + everything),
    )


def test_a_forbid_outside_the_app_s_namespace_is_refused() -> None:
    # It would change every other app's decisions (and the runtime's).
    wall = '@id("no-assistant")\nforbid (principal, action == Action::"model.call", resource);'
    refused(
        "policy 'no-assistant' names Action::\"model.call\", outside its namespace Shop",
        replace(SHOP, policies=POLICIES + wall),
    )


@pytest.mark.parametrize(
    ("declaration", "attribute"),
    [
        ("entity Basket = { sensitivity: String };", "tenant"),
        ("entity Basket = { tenant: String };", "sensitivity"),
        ("entity Basket = { tenant?: String, sensitivity: String };", "tenant"),
        ("entity Basket = { tenant: Long, sensitivity: String };", "tenant"),
        ("entity Basket;", "tenant"),
        (
            "entity Basket in [Order] = { address: { tenant: String }, sensitivity: String };",
            "tenant",
        ),
    ],
)
def test_an_app_entity_without_tenant_and_sensitivity_is_refused(
    declaration: str, attribute: str
) -> None:
    schema = SCHEMA.replace("namespace Shop {", "namespace Shop {\n    " + declaration)
    refused(
        f"app shop: entity type Shop::Basket must declare `{attribute}: String` (required)",
        replace(SHOP, schema=schema),
    )


def test_a_declared_action_the_schema_lacks_is_refused() -> None:
    ghost = PolicyAction("order.ship", "Order", "Shop")
    refused(
        "app shop: action Shop::order.ship on Shop::Order is not declared by its schema",
        replace(SHOP, actions=(*SHOP.actions, ghost)),
    )
    wrong_type = PolicyAction("order.read", "Payment", "Shop")
    refused(
        "action Shop::order.read on Shop::Payment is not declared",
        replace(SHOP, actions=(wrong_type, ORDER_PAY)),
    )


def test_an_action_outside_the_app_s_namespace_is_refused() -> None:
    refused(
        "app shop: action Elsewhere::order.read is not in the app's namespace Shop",
        replace(SHOP, actions=(replace(ORDER_READ, namespace="Elsewhere"), ORDER_PAY)),
    )


def test_two_apps_never_share_a_namespace_or_a_policy_id() -> None:
    twin = replace(SHOP, name="twin")
    refused("app twin: namespace Shop is already app shop's", SHOP, twin)
    runtime_id = (
        '@id("tenant-boundary")\npermit (principal in Role::"customer", '
        'action == Shop::Action::"order.read", resource);'
    )
    refused(
        "app shop: policy @id 'tenant-boundary' is already the runtime's",
        replace(SHOP, policies=POLICIES + runtime_id),
    )
    twice = replace(SHOP, policies=POLICIES + POLICIES)
    refused("app shop: policy @id 'customers-read-their-orders' is used twice", twice)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (SCHEMA.replace("namespace Shop", "namespace Store"), "found namespace blocks: Store"),
        (
            SCHEMA + "\nnamespace Shop2 { entity X = { tenant: String, sensitivity: String }; }",
            "Shop, Shop2",
        ),
        (
            "entity Loose = { tenant: String, sensitivity: String };\n" + SCHEMA,
            "outside its namespace block",
        ),
    ],
)
def test_the_schema_fragment_is_one_block_of_the_app_s_namespace(schema: str, message: str) -> None:
    refused(message, replace(SHOP, schema=schema))


def test_money_is_declared_among_the_app_s_actions_and_roles() -> None:
    refused(
        "app shop: money action Shop::order.read is not one of its actions",
        replace(SHOP, actions=(ORDER_PAY,), money_actions=(ORDER_READ,), parties={}),
    )
    refused(
        "app shop: money role(s) banker are not roles of the app",
        replace(SHOP, money_roles=("banker",)),
    )


def test_a_party_is_an_attribute_of_type_user() -> None:
    refused(
        "app shop: party address of Shop::Order is not an attribute of type User",
        replace(SHOP, parties={"Order": {"mine": {"address": "me"}}}),
    )
    refused(
        "app shop: parties are declared for Shop::Basket, which it does not declare",
        replace(SHOP, parties={"Basket": {"mine": {"customer": "me"}}}),
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        # A quoted attribute name with a comma would read as a second, required `tenant`.
        (
            SCHEMA.replace(
                "entity Payment = { tenant: String,",
                'entity Payment = { tenant?: String, "x,tenant: String,y": Long,',
            ),
            "may hold only letters, digits",
        ),
        # `//` inside a string would hide the rest of the line from the text checks.
        (
            SCHEMA.replace("namespace Shop {", 'namespace Shop {\n    type T = { "a//": String };'),
            "may hold only letters, digits",
        ),
        # An action group: a permit on the group would reach the money action.
        (
            SCHEMA.replace(
                'action "order.pay"\n', 'action "pay.any";\n    action "order.pay" in ["pay.any"]\n'
            ),
            "an action declared `in` a group",
        ),
    ],
)
def test_a_schema_cannot_hide_declarations_from_the_checks(schema: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        compose([replace(SHOP, schema=schema)])


def test_cedar_itself_holds_every_acted_on_type_to_a_required_tenant() -> None:
    # A type the text check cannot see as optional still fails Cedar's own reading.
    optional = SCHEMA.replace(
        "entity Payment = { tenant: String, sensitivity: String };",
        "type Held = { tenant?: String };\n    entity Payment = Held;",
    )
    with pytest.raises(PolicyError, match="Payment"):
        compose([replace(SHOP, schema=optional)])
