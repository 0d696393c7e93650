"""The runtime's own policies: the admin runs the tenant, nobody else gets a runtime action
from them, the walls hold, and the reviewed runtime snapshot says exactly what they decide."""

from __future__ import annotations

import pytest

from ramparts.policy.engine import (
    POLICY_DIR,
    Channel,
    PolicyAction,
    PolicyEngine,
    PolicyError,
    RuntimeAction,
    Subject,
    Target,
)
from ramparts.policy.matrix import changes, decide_all, read_snapshot, runtime_scope

ENGINE = PolicyEngine.compose()
OTP = frozenset({"pwd", "otp"})
WEBAUTHN = frozenset({"pwd", "hwk"})


def person(role: str, amr: frozenset[str] = OTP, region: str = "eu") -> Subject:
    return Subject(f"{role}@acme", "acme", region, frozenset({role}) - {"none"}, amr)


def of_acme(action: PolicyAction) -> Target:
    """A resource of `action` in the caller's tenant (a model endpoint in its region)."""
    if action.entity_type == "ModelEndpoint":
        return Target(action.entity_type, "gpt", region="eu")
    return Target(action.entity_type, "t", "acme", "internal")


@pytest.mark.parametrize("action", RuntimeAction.ALL, ids=str)
def test_the_admin_runs_the_tenant_and_no_one_else_gets_a_runtime_action(
    action: PolicyAction,
) -> None:
    target = of_acme(action)
    admin = ENGINE.decide(person("admin"), action, target, Channel.UI)
    assert admin.allowed
    assert admin.policy_ids == ("admin-runs-the-tenant",)
    # A role no composed app declares gets nothing from the runtime.
    for role in ("none", "some-app-role"):
        assert not ENGINE.decide(person(role), action, target, Channel.UI).allowed


def test_the_tenant_boundary_holds_every_runtime_resource() -> None:
    action = RuntimeAction.AUDIT_READ
    theirs = Target(action.entity_type, "t", "globex", "internal")
    refused = ENGINE.decide(person("admin"), action, theirs, Channel.UI)
    assert not refused.allowed
    assert refused.policy_ids == ("tenant-boundary",)
    restricted = Target(action.entity_type, "t", "acme", "restricted")
    refused = ENGINE.decide(person("admin"), action, restricted, Channel.UI)
    assert refused.policy_ids == ("restricted-needs-webauthn",)
    assert ENGINE.decide(person("admin", WEBAUTHN), action, restricted, Channel.UI).allowed


def test_eu_data_never_goes_to_a_non_eu_model() -> None:
    def call(tenant_region: str, endpoint_region: str) -> bool:
        endpoint = Target("ModelEndpoint", "gpt", region=endpoint_region)
        subject = person("admin", region=tenant_region)
        return ENGINE.decide(subject, RuntimeAction.MODEL_CALL, endpoint, Channel.UI).allowed

    assert call("eu", "eu")
    assert call("eu", "local")
    assert not call("eu", "us")
    assert call("us", "us")


def test_services_never_read_the_audit_trail() -> None:
    service = Subject("svc", "acme", "eu", frozenset({"admin"}), frozenset(), service=True)
    action = RuntimeAction.AUDIT_READ
    target = Target(action.entity_type, "t", "acme")
    decision = ENGINE.decide(service, action, target, Channel.SERVICE)
    assert not decision.allowed
    assert decision.errors  # the schema says audit.read is for users: an error, so a deny


def test_the_runtime_policies_decide_exactly_as_the_reviewed_snapshot() -> None:
    """Change a runtime policy without `ramparts policy snapshot` in the same change and this
    fails, listing every decision that moved."""
    scope = runtime_scope()
    moved = changes(read_snapshot(scope), decide_all(ENGINE, scope), scope)
    assert not moved, "decisions changed without an updated snapshot:\n" + "\n".join(
        f"  {c.cell.key}: {'allow' if c.old else 'deny'} -> {'allow' if c.new else 'deny'}"
        for c in moved
    )
    # The runtime's snapshot holds the runtime's actions and roles only.
    actions = set(decide_all(ENGINE, scope))
    assert {key.split("|")[1] for key in actions} == {str(a) for a in RuntimeAction.ALL}
    assert {key.split("|")[0] for key in actions} == {"admin", "none"}


def test_a_target_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"audit\.read applies to AuditLog, not Assistant"):
        ENGINE.evaluate(
            person("admin"), RuntimeAction.AUDIT_READ, Target("Assistant", "t", "acme"), Channel.UI
        )


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("permit (principal, action, resource);", "has no @id annotation"),
        (
            '@id("same")\npermit (principal, action, resource);\n'
            '@id("same")\nforbid (principal, action, resource);',
            "duplicate policy @id: same",
        ),
    ],
)
def test_every_policy_has_one_unique_id(policies: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PolicyEngine(policies, (POLICY_DIR / "schema.cedarschema").read_text())


def test_the_runtime_declares_the_actions_routes_may_name() -> None:
    assert ENGINE.action("audit.read") is RuntimeAction.AUDIT_READ
    assert ENGINE.action("Nowhere::audit.read") is None
    assert RuntimeAction.GRANTABLE == (RuntimeAction.MODEL_CALL, RuntimeAction.ASSISTANT_APPROVE)
