"""One policy set from the runtime's Cedar and each app's fragment, checked as a whole.

An app brings a schema fragment (one `namespace <App> { ... }` block), its policies and the
actions it declares (`PolicyFragment`; `ramparts.apps` makes one from an `App`). The runtime
adds, per app, the money walls its `money_actions` ask for. Composition refuses what would let
one app reach beyond itself or slip past a runtime wall: a namespace or policy @id used twice,
an app permit on every action or on another namespace's action (other than the runtime's
`RuntimeAction.GRANTABLE`, and those only to the app's own roles), an app forbid outside its
own namespace (it would change other apps' decisions), an entity type without `tenant` and
`sensitivity` (the tenant boundary would not hold it), and an action the schema does not
declare. Each refusal is a `PolicyError` naming the app and what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

from ramparts.policy.engine import (
    POLICY_DIR,
    PolicyAction,
    PolicyEngine,
    PolicyError,
    RuntimeAction,
    read_policies,
)

__all__ = ["Composition", "PolicyFragment", "compose", "composition", "money_walls"]

_NAMESPACE = re.compile(r"[A-Z][A-Za-z0-9_]*")
_PLAIN_STRING = re.compile(r'"[A-Za-z0-9_.:-]+"')
_ACTION_GROUP = re.compile(r'\baction\s+(?:"[^"]*"|\w+)(?:\s*,\s*(?:"[^"]*"|\w+))*\s+in\b')
_NAMESPACE_BLOCK = re.compile(r"namespace\s+([A-Za-z0-9_:]+)\s*\{")
_ENTITY = re.compile(r"\bentity\s+([A-Za-z0-9_\s,]+?)\s*(?=\bin\b|=|\{|\benum\b|;|\btags\b)")
_ATTRIBUTE = re.compile(r"\"?([A-Za-z_][A-Za-z0-9_]*)\"?\s*(\?)?\s*:\s*([A-Za-z_:]+)")


@dataclass(frozen=True)
class PolicyFragment:
    """One app's Cedar, as the runtime composes it.

    `schema` is one `namespace <namespace> { ... }` block; `policies` its policy text. `actions`
    are the actions its routes and tools ask for; `money_actions` (some of them) move money:
    only `money_roles` may, and on the assistant's word only as a held request (see
    `money_walls`). `roles` are the app's roles (the only ones its policies may grant a
    runtime action to). `parties` are the decision matrix's dimensions, per resource type
    (unqualified): relation → {party attribute: who}; their attribute names are the type's
    parties (attributes of type User). `snapshot` is where the app's reviewed decisions
    live."""

    name: str
    namespace: str
    schema: str
    policies: str
    actions: tuple[PolicyAction, ...]
    money_actions: tuple[PolicyAction, ...] = ()
    money_roles: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    parties: Mapping[str, Mapping[str, Mapping[str, str | None]]] = field(default_factory=dict)
    snapshot: Path | None = None

    def party_attributes(self) -> dict[str, tuple[str, ...]]:
        """Per qualified entity type, its party attributes, in the order first declared."""
        found: dict[str, tuple[str, ...]] = {}
        for kind, relations in self.parties.items():
            names: dict[str, None] = {}
            for parties in relations.values():
                names.update(dict.fromkeys(parties))
            found[f"{self.namespace}::{kind}"] = tuple(names)
        return found


@dataclass(frozen=True)
class Composition:
    """The composed Cedar, as text (for a reviewer, or an engine built with other policies
    against the same schema)."""

    policies: str
    schema: str
    parties: dict[str, tuple[str, ...]]
    actions: tuple[PolicyAction, ...]

    def engine(self) -> PolicyEngine:
        return PolicyEngine(self.policies, self.schema, self.parties, self.actions)


def compose(fragments: Sequence[PolicyFragment] = (), runtime: Path = POLICY_DIR) -> PolicyEngine:
    """The engine for the runtime's Cedar (in `runtime`) and `fragments`, checked whole."""
    return composition(fragments, runtime).engine()


def composition(
    fragments: Sequence[PolicyFragment] = (), runtime: Path = POLICY_DIR
) -> Composition:
    runtime_schema = runtime / "schema.cedarschema"
    schema = runtime_schema if runtime_schema.is_file() else POLICY_DIR / "schema.cedarschema"
    schema_text = schema.read_text()
    policies = [read_policies(runtime)]
    ids = dict.fromkeys(_ids(policies[0], "the runtime"), "the runtime")
    namespaces: dict[str, str] = {}
    parties: dict[str, tuple[str, ...]] = {}
    for fragment in fragments:
        where = f"app {fragment.name}"
        if fragment.namespace in namespaces:
            raise PolicyError(
                f"{where}: namespace {fragment.namespace} is already app "
                f"{namespaces[fragment.namespace]}'s"
            )
        namespaces[fragment.namespace] = fragment.name
        entities = _check_schema(fragment)
        _check_actions(fragment)
        _check_parties(fragment, entities)
        walls = money_walls(fragment)
        for policy_id in _ids(fragment.policies, where) + _ids(walls, where):
            if policy_id in ids:
                raise PolicyError(
                    f"{where}: policy @id {policy_id!r} is already {ids[policy_id]}'s"
                )
            ids[policy_id] = where
        _check_scopes(fragment)
        schema_text += "\n" + fragment.schema
        policies += [fragment.policies, walls]
        parties.update(fragment.party_attributes())
    text = "\n".join(p for p in policies if p)
    _check_declared(fragments, text, schema_text)
    actions = tuple(a for fragment in fragments for a in fragment.actions)
    return Composition(text, schema_text, parties, actions)


def money_walls(fragment: PolicyFragment) -> str:
    """The runtime's walls around an app's money actions: only its money roles move money,
    and on the assistant's word (the `ai_tool` channel) only as a held request, never by
    itself: the AI gateway asks Cedar with `context.held` whether the model's call may wait
    for a second person, and only a money role's may. The approved call then runs on the
    `api` channel, after a second person allowed the same action approved it."""
    if not fragment.money_actions:
        return ""
    actions = ", ".join(f'{a.cedar_type}::"{a.name}"' for a in fragment.money_actions)
    roles = ", ".join(f'Role::"{role}"' for role in fragment.money_roles)
    # No money role: nobody moves this app's money, held or not.
    unless = f" unless {{ principal in [{roles}] }}" if roles else ""
    held = f"\nunless {{ context.held && principal in [{roles}] }}" if roles else ""
    return (
        f'@id("{fragment.name}-money-needs-money-role")\n'
        f"forbid (principal, action in [{actions}], resource){unless};\n"
        f'@id("{fragment.name}-money-from-ai-tools-only-held")\n'
        f"forbid (principal, action in [{actions}], resource)\n"
        f'when {{ context.channel == "ai_tool" }}{held};\n'
    )


def _ids(policies: str, where: str) -> list[str]:
    if not policies.strip():
        return []
    try:
        parsed = json.loads(cedarpy.policies_to_json_str(policies))
    except ValueError as exc:  # cedarpy's parse error
        raise PolicyError(f"{where}: the policies do not parse: {exc}") from None
    found = []
    for generated, policy in parsed.get("staticPolicies", {}).items():
        policy_id = (policy.get("annotations") or {}).get("id")
        if not policy_id:
            raise PolicyError(f"{where}: policy {generated} has no @id annotation")
        if policy_id in found:
            raise PolicyError(f"{where}: policy @id {policy_id!r} is used twice")
        found.append(policy_id)
    if parsed.get("templates"):
        raise PolicyError(f"{where}: policy templates are not supported")
    return found


def _check_schema(fragment: PolicyFragment) -> dict[str, dict[str, tuple[bool, str]]]:
    """The fragment is exactly one block of its own namespace, and every entity type in it
    carries a required `tenant: String` and `sensitivity: String`. Returns each entity type's
    attributes: name → (optional, type)."""
    where = f"app {fragment.name}"
    if not _NAMESPACE.fullmatch(fragment.namespace):
        raise PolicyError(f"{where}: namespace {fragment.namespace!r} is not a Cedar identifier")
    text = _without_comments(fragment.schema, where)
    if _ACTION_GROUP.search(text):
        raise PolicyError(
            f"{where}: an action declared `in` a group: an app's actions stand alone (the "
            "money walls and the permit checks judge each action by its own name)"
        )
    blocks = _NAMESPACE_BLOCK.findall(text)
    if blocks != [fragment.namespace]:
        found = ", ".join(blocks) or "none"
        raise PolicyError(
            f"{where}: the schema must be one `namespace {fragment.namespace} {{ ... }}` block "
            f"(found namespace blocks: {found})"
        )
    opening = _NAMESPACE_BLOCK.search(text)
    if opening is None:  # cannot be: its name was just found
        raise PolicyError(f"{where}: no namespace block")
    body_end = _closing_brace(text, opening.end() - 1)
    if text[: opening.start()].strip() or (body_end is not None and text[body_end + 1 :].strip()):
        raise PolicyError(f"{where}: the schema declares something outside its namespace block")
    if body_end is None:
        raise PolicyError(f"{where}: the namespace block is not closed")
    entities: dict[str, dict[str, tuple[bool, str]]] = {}
    block = text[opening.end() : body_end]
    for declaration in _ENTITY.finditer(block):
        attributes = _top_level_attributes(block, declaration.end())
        for name in (n.strip() for n in declaration.group(1).split(",")):
            for required in ("tenant", "sensitivity"):
                if attributes.get(required) != (False, "String"):
                    raise PolicyError(
                        f"{where}: entity type {fragment.namespace}::{name} must declare "
                        f"`{required}: String` (required): the tenant boundary and the "
                        "sensitivity rules hold every app resource by them"
                    )
            entities[name] = attributes
    return entities


def _without_comments(schema: str, where: str) -> str:
    """The schema without its `//` comments. Its strings (action names, quoted attribute
    names) may hold only letters, digits and `_ . : -`: one holding `//`, a brace, a comma
    or a quotation mark could hide a declaration from the checks that read the text."""
    kept, index = [], 0
    while index < len(schema):
        if schema.startswith("//", index):
            end = schema.find("\n", index)
            index = len(schema) if end < 0 else end
        elif schema[index] == '"':
            end = schema.find('"', index + 1)
            literal = schema[index : len(schema) if end < 0 else end + 1]
            if not _PLAIN_STRING.fullmatch(literal):
                raise PolicyError(
                    f"{where}: schema string {literal[:40]!r} may hold only letters, digits "
                    "and _ . : -"
                )
            kept.append(literal)
            index += len(literal)
        else:
            kept.append(schema[index])
            index += 1
    return "".join(kept)


def _top_level_attributes(text: str, start: int) -> dict[str, tuple[bool, str]]:
    """The attributes of the record an entity declaration (from `start` to its `;`) declares
    at its top level: name → (optional, type). Nested records are skipped, not misread."""
    depth, top, index = 0, [], start
    while index < len(text) and not (text[index] == ";" and depth == 0):
        char = text[index]
        if char in "{[<":
            depth += 1
            if depth == 1 and char == "{":
                top.append("")
        elif char in "}]>":
            depth -= 1
        elif depth == 1 and top:
            top[-1] += char if char != "," else "\n"
        index += 1
    attributes: dict[str, tuple[bool, str]] = {}
    for line in "\n".join(top).splitlines():
        found = _ATTRIBUTE.fullmatch(line.strip())
        if found:
            attributes[found.group(1)] = (found.group(2) == "?", found.group(3))
    return attributes


def _closing_brace(text: str, opening: int) -> int | None:
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _check_actions(fragment: PolicyFragment) -> None:
    where = f"app {fragment.name}"
    if len(set(fragment.actions)) != len(fragment.actions):
        raise PolicyError(f"{where}: an action is declared twice")
    for action in fragment.actions:
        if action.namespace != fragment.namespace:
            raise PolicyError(
                f"{where}: action {action} is not in the app's namespace {fragment.namespace}"
            )
    for action in fragment.money_actions:
        if action not in fragment.actions:
            raise PolicyError(f"{where}: money action {action} is not one of its actions")
    unknown = sorted(set(fragment.money_roles) - set(fragment.roles))
    if unknown:
        raise PolicyError(f"{where}: money role(s) {', '.join(unknown)} are not roles of the app")


def _check_parties(
    fragment: PolicyFragment, entities: Mapping[str, Mapping[str, tuple[bool, str]]]
) -> None:
    where = f"app {fragment.name}"
    for kind, names in fragment.party_attributes().items():
        local = kind.split("::", 1)[1]
        if local not in entities:
            raise PolicyError(
                f"{where}: parties are declared for {kind}, which it does not declare"
            )
        for name in names:
            declared = entities[local].get(name)
            if declared is None or declared[1] not in {"User", "::User"}:
                raise PolicyError(
                    f"{where}: party {name} of {kind} is not an attribute of type User"
                )


def _check_scopes(fragment: PolicyFragment) -> None:
    """An app's permits name actions of its namespace, or a grantable runtime action for the
    app's own roles; its forbids name actions of its namespace only."""
    where = f"app {fragment.name}"
    if not fragment.policies.strip():
        return
    own = f"{fragment.namespace}::Action"
    grantable = {a.name for a in RuntimeAction.GRANTABLE}
    parsed = json.loads(cedarpy.policies_to_json_str(fragment.policies))
    for policy in parsed.get("staticPolicies", {}).values():
        policy_id = policy["annotations"]["id"]
        scope = policy["action"]
        if scope["op"] == "All":
            raise PolicyError(
                f"{where}: policy {policy_id!r} applies to every action; name the app's own"
            )
        named = [scope["entity"]] if "entity" in scope else list(scope.get("entities", ()))
        for action in named:
            if action["type"] == own:
                continue
            runtime_grant = (
                policy["effect"] == "permit"
                and action["type"] == "Action"
                and action["id"] in grantable
            )
            if not runtime_grant:
                raise PolicyError(
                    f'{where}: policy {policy_id!r} names {action["type"]}::"{action["id"]}", '
                    f"outside its namespace {fragment.namespace} (an app may permit only "
                    f"{', '.join(sorted(grantable))} of the runtime's actions)"
                )
            role = _principal_role(policy["principal"])
            if role not in fragment.roles:
                raise PolicyError(
                    f"{where}: policy {policy_id!r} grants {action['id']} to "
                    f"{'every principal' if role is None else f'role {role}'}; "
                    "an app grants runtime actions only to its own roles "
                    '(`principal in Role::"<role>"`)'
                )


def _principal_role(scope: dict[str, Any]) -> str | None:
    """The role a principal scope is limited to (`principal in Role::"r"`, optionally with
    `is User`), or None."""
    entity = scope.get("entity") if scope["op"] == "in" else (scope.get("in") or {}).get("entity")
    if isinstance(entity, dict) and entity.get("type") == "Role":
        return str(entity["id"])
    return None


def _check_declared(fragments: Sequence[PolicyFragment], policies: str, schema: str) -> None:
    """The whole validates, and every declared action exists and applies to its resource type:
    a probe policy per action, validated with the rest."""
    result = cedarpy.validate_policies(policies, schema)
    if not result.validation_passed:
        raise PolicyError("; ".join(str(e) for e in result.errors) or "invalid policies")
    for fragment in fragments:
        for action in fragment.actions:
            probe = (
                f'@id("probe") permit (principal, action == {action.cedar_type}::"{action.name}", '
                f"resource is {action.entity_type});"
            )
            if not cedarpy.validate_policies(probe, schema).validation_passed:
                raise PolicyError(
                    f"app {fragment.name}: action {action} on {action.entity_type} is not "
                    "declared by its schema"
                )
            # Cedar's own reading of the resource type, whatever the text check saw: a
            # required String tenant and sensitivity, or the probe does not validate.
            held = probe.replace(
                ");",
                ") when { resource.tenant == context.tenant && "
                "resource.sensitivity == context.sensitivity };",
            )
            if not cedarpy.validate_policies(held, schema).validation_passed:
                raise PolicyError(
                    f"app {fragment.name}: entity type {action.entity_type} must declare "
                    "`tenant: String` and `sensitivity: String` (required)"
                )
