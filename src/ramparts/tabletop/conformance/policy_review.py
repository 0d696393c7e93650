"""AZ-1, policies as code: the Cedar the instance's apps and the runtime ship is composed and
validated here as `ramparts policy validate` does; its decisions match the reviewed snapshots
(`ramparts policy snapshot --check`); a diff of the set with itself shows nothing and a planted
change shows up (`ramparts policy diff`); and the running instance's own decisions cite only
policies of that set (its audit trail), so the set checked is the set it runs."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import cedarpy

from ramparts.apps import App, policy_fragments, selected_apps
from ramparts.audit.events import Action
from ramparts.config import load_settings
from ramparts.policy.compose import PolicyFragment, compose, composition
from ramparts.policy.engine import PolicyError
from ramparts.policy.matrix import (
    Scope,
    app_scope,
    changes,
    decide_all,
    read_snapshot,
    runtime_scope,
)
from ramparts.tabletop.conformance.checks import Outcome
from ramparts.tabletop.conformance.findings import Findings
from ramparts.tabletop.conformance.people import admin_of
from ramparts.tabletop.target import DrillError, Target

__all__ = ["check", "served_apps"]

PLANTED_ID = "conformance-drill-planted"


def served_apps(target: Target) -> list[App]:
    """The apps the instance serves: those its description names, else RAMPARTS_APPS's here."""
    named = target.description.get("apps")
    names = [n.strip() for n in named.split(",")] if named else load_settings().apps
    return selected_apps(list(names) if names is not None else None)


def policy_ids(policies: str) -> set[str]:
    parsed = json.loads(cedarpy.policies_to_json_str(policies))
    return {
        str(p.get("annotations", {}).get("id")) for p in parsed.get("staticPolicies", {}).values()
    }


def check(target: Target) -> Outcome:
    f = Findings(
        "the runtime's and the served apps' Cedar compose and validate against their schema; "
        "their decisions match the reviewed snapshots; a diff shows nothing for the same set "
        "and every decision a planted change moves; the instance's decisions cite only "
        "policies of this set"
    )
    fragments = policy_fragments(served_apps(target))
    try:
        whole = composition(fragments)
        whole.engine()
    except PolicyError as exc:
        f.expect(False, "the policies compose and validate", f"the policies do not validate: {exc}")
        return f.outcome("")
    ids = policy_ids(whole.policies)
    names = [fragment.name for fragment in fragments]
    f.saw(f"{len(ids)} policies (runtime + {', '.join(names) or 'no app'}) validate")
    no_app: list[PolicyFragment] = []
    scopes = [("runtime", runtime_scope(), no_app)] + [
        (fragment.name, app_scope(fragment), [fragment]) for fragment in fragments
    ]
    for name, scope, parts in scopes:
        current = decide_all(compose(parts), scope)
        moved = changes(read_snapshot(scope), current, scope)
        f.expect(
            not moved,
            f"{name}: {len(current)} decisions, {sum(current.values())} allowed, as reviewed",
            f"{name}: {len(moved)} decisions differ from the reviewed snapshot",
        )
        same = changes(current, current, scope)
        f.expect(not same, f"{name}: diff with itself → no change", "a diff of a set with itself")
    _planted(f, fragments)
    _live(f, target, ids)
    return f.outcome(
        f"{len(ids)} policies validate and decide as reviewed; the diff caught a planted change; "
        "the instance's decisions cite only these policies"
    )


def _planted(f: Findings, fragments: list[PolicyFragment]) -> None:
    """A forbid planted on one action of an app: the diff must show that action's allowed
    cells turning to deny (only its cells are decided: a forbid on one action moves no other)."""
    planted_in = next((fr for fr in fragments if fr.actions), None)
    if planted_in is None:
        f.saw("no app action to plant a change on: the planted diff is not run")
        return
    action = planted_in.actions[0]
    planted = replace(
        planted_in,
        policies=planted_in.policies + f'\n@id("{PLANTED_ID}")\nforbid (principal, action == '
        f'{action.cedar_type}::"{action.name}", resource);\n',
    )
    scope = app_scope(planted_in)
    narrow = Scope(scope.name, scope.roles, (action,), scope.snapshot, scope.parties)
    before = decide_all(compose([planted_in]), narrow)
    after = decide_all(compose([planted]), narrow)
    moved = changes(before, after, narrow)
    f.expect(
        bool(moved) and len(moved) == sum(before.values()) and not any(c.new for c in moved),
        f"planted `forbid {action.qualified}` in {planted_in.name}: the diff shows "
        f"{len(moved)} decisions turning to deny (all {sum(before.values())} it allowed)",
        "the diff does not show what a planted change moves",
    )


def _live(f: Findings, target: Target, ids: set[str]) -> None:
    cited: set[str] = set()
    for tenant in target.tenants():
        answer = target.session(admin_of(target, tenant)).get(
            "/api/audit/events",
            params={"action": Action.AUTHORIZATION_DECIDED.value, "limit": 500},
        )
        if answer.status_code != 200:
            raise DrillError(f"the audit trail answered {answer.status_code}")
        cited |= {str(p) for e in answer.json()["items"] for p in _policy_ids(e)}
    unknown = sorted(cited - ids)
    f.expect(
        bool(cited) and not unknown,
        f"the instance's decisions cite {len(cited)} policies, all of this set",
        f"the instance decided with policies not in the set checked here: {unknown} (does "
        "RAMPARTS_APPS name the apps it serves?)"
        if unknown
        else "no decision of the instance cites a policy",
    )


def _policy_ids(event: dict[str, Any]) -> list[Any]:
    found = event.get("policy_ids")
    return list(found) if isinstance(found, list) else []
