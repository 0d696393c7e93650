"""Live checks of the platform controls: PLT-1 (the prod profile refuses an unsafe start) and
PLT-4 (a restore drill within its objectives; the kill-switch). PLT-2 is in `supply_chain`,
PLT-3 in `edge`, registered from here. They act as the instance's operator would: its
commands, and `ramparts serve` of the same installation under other settings (`operating`)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ramparts.ai.tools import AfterUntrusted, Risk
from ramparts.audit.events import Action
from ramparts.tabletop.conformance import edge, supply_chain
from ramparts.tabletop.conformance.ai_untrusted import INJECTION
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.declared import Declared, needs_a_record, sample_arguments
from ramparts.tabletop.conformance.operating import Stopped, operator_command, stopped_at_start
from ramparts.tabletop.conformance.playing import (
    Answer,
    admin_of,
    answered,
    ask,
    calling,
    one_per_role_set,
    person,
    problem_slug,
    unproven,
)
from ramparts.tabletop.evidence import audit_events, cited, now, redacted
from ramparts.tabletop.redteam.trail import strikes
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["backups_and_killswitch", "edge", "prod_refuses_unsafe_starts", "supply_chain"]

PLT1 = (
    "under the prod profile `ramparts serve` refuses to start (exit 3, each violation named, "
    "nothing served) with demo users, a default secret, debug on, the local KMS or the "
    "sandbox PSP"
)
PLT4 = (
    "`ramparts drill` restores a fresh backup, verified, within its RPO and RTO; the "
    "kill-switch (global, per tenant, per tool) stops AI tool calls within a second, "
    "approvals of held calls included, and lifts"
)
REFUSED = "ramparts: error: refusing to start under the prod profile: "
#: What each unsafe setting must be refused as, in the guard's words.
UNSAFE = {
    "debug on": "debug is on (RAMPARTS_DEBUG)",
    "a default secret": "RAMPARTS_SECRET_KEY is a default or weak secret",
    "the local KMS": "local KMS keystore",
    "the sandbox PSP": "sandbox PSP",
}
DEMO_DATA = "demo tenants or users present in the database"
#: How long a switch may take to stop calls (every process reads it at most 0.5 s late).
SWITCH_SECONDS = 1.5
#: Between two probes of a switch: fine enough to time it, few enough for the person's
#: request rate (30 a minute by default) to last the whole check.
PROBE_SECONDS = 0.2
#: How far back the abuse limiter counts a person's strikes (its default window: 10 minutes).
STRIKE_WINDOW_SECONDS = 600


# --- PLT-1 --------------------------------------------------------------------------------------


def _clean_prod(target: Target) -> dict[str, str | None]:
    """A production configuration the guard finds nothing wrong with (fresh, strong made-up
    secrets, nothing of them kept), but for the instance's own database: the runtime role's
    URL with a made-up password (a server that checks passwords refuses it: said so)."""
    if target.urls is None:
        raise DrillError("the instance's database is not reachable from here")
    app_url = target.urls.app.set(drivername="postgresql", password=secrets.token_urlsafe(24))
    if app_url.host is None and "host" in app_url.query:
        # The embedded server listens on a socket (`?host=<directory>`, which libpq takes
        # over the URL's host); the settings want a host in the URL all the same.
        app_url = app_url.set(host="localhost")
    strong = secrets.token_urlsafe(32)
    return {
        "RAMPARTS_PROFILE": "prod",
        "RAMPARTS_DATABASE_URL": None,
        "RAMPARTS_APP_DATABASE_URL": app_url.render_as_string(hide_password=False),
        "RAMPARTS_SECRET_KEY": secrets.token_urlsafe(32),
        "RAMPARTS_KMS_BACKEND": "vault",
        "RAMPARTS_KMS_KEY_FILE": None,
        "RAMPARTS_KMS_PASSPHRASE": None,
        "RAMPARTS_VAULT_URL": "https://vault.invalid:8200",
        "RAMPARTS_VAULT_TOKEN": f"hvs.{secrets.token_urlsafe(32)}",
        "RAMPARTS_PSP": "stripe",
        "RAMPARTS_PSP_API_BASE": None,
        "RAMPARTS_PSP_PUBLISHABLE_KEY": None,
        "RAMPARTS_PUBLIC_URL": "https://ramparts.invalid",
        "RAMPARTS_REDIS_URL": f"redis://:{strong}@127.0.0.1:6379/0",
        "RAMPARTS_MODEL": "offline",
        "RAMPARTS_DEBUG": "false",
        "RAMPARTS_CORS_ORIGINS": None,
        "RAMPARTS_ALERT_WEBHOOK_URL": None,
        "RAMPARTS_METRICS_TOKEN": None,
        "RAMPARTS_METRICS_NETWORKS": None,
        "RAMPARTS_HSTS_MAX_AGE": None,
    }


def _refusals(stopped: Stopped) -> list[str]:
    """The violations a refused start named, or [] when it did not refuse that way."""
    line = stopped.stderr.strip()
    if stopped.code != 3 or not line.startswith(REFUSED):
        return []
    return line.removeprefix(REFUSED).split("; ")


def _own_profile(target: Target) -> str:
    """What is known of the instance's own profile, said as what it is: the drill's own
    instance runs the profile the drill started it with; of a running one, the instance
    tells nothing, and the settings here are only this shell's."""
    started = target.description.get("profile")
    if started:
        return (
            f"the instance itself was started by this drill under the {started} profile, where "
            "demo users, the local KMS and the sandbox PSP are allowed on purpose"
        )
    shell = target.environment.get("RAMPARTS_PROFILE", "dev")
    return (
        f"the settings of this shell name the {shell} profile (what the running instance was "
        "started with is not visible from here); the starts below use them"
    )


@check("PLT-1")
def prod_refuses_unsafe_starts(target: Target) -> Outcome:
    # The instance's own settings under prod, with debug on and a well-known default secret.
    unsafe = {
        "RAMPARTS_PROFILE": "prod",
        "RAMPARTS_DEBUG": "true",
        "RAMPARTS_SECRET_KEY": "changeme",
    }
    with ThreadPoolExecutor(2) as pool:
        own, clean = pool.map(
            lambda settings: stopped_at_start(target, settings), (unsafe, _clean_prod(target))
        )
    evidence = [_own_profile(target)]
    wrong = []
    named = _refusals(own)
    evidence.append(
        f"its settings under prod, debug on, secret 'changeme' → exit {own.code}, "
        f"port answered: {own.served}; named: {redacted('; '.join(named) or own.stderr)}"
    )
    missing = [what for what, words in UNSAFE.items() if not any(words in v for v in named)]
    if missing or own.served:
        wrong.append(f"the unsafe start was not refused for {', '.join(missing) or 'all'}")
    refused = _refusals(clean)
    evidence.append(
        f"a clean prod configuration on its database → exit {clean.code}, port answered: "
        f"{clean.served}; named: {redacted('; '.join(refused) or clean.stderr)}"
    )
    if clean.code == 3 and refused != [DEMO_DATA]:
        wrong.append(f"the clean configuration was refused for {refused}, not the demo data")
    if clean.served or (clean.code is None):
        wrong.append("the clean configuration with demo data was served")
    if wrong:
        return fail(PLT1, "; ".join(wrong), evidence)
    if refused != [DEMO_DATA]:
        # A server that checks passwords refuses the made-up one before the demo data is
        # looked at: that part is then not proven here.
        return unproven(
            PLT1,
            "the unsafe settings were refused by name; the demo data could not be reached: "
            f"the clean configuration stopped before the database check (exit {clean.code})",
            evidence,
        )
    return passed(
        PLT1,
        "prod refused the instance's own settings naming debug, the default secret, the local "
        "KMS and the sandbox PSP, and a clean configuration naming the demo data of its "
        "database; neither served anything",
        evidence,
    )


# --- PLT-4 --------------------------------------------------------------------------------------


def _drill(target: Target, evidence: list[str]) -> list[str]:
    done = operator_command(target, "drill", "--json")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        line = redacted(done.stderr, last_line=True)
        return [f"ramparts drill → exit {done.returncode}: {line}"]
    restore, rpo, rto = report["restore"], report["rpo"], report["rto"]
    chains = report["audit"]["chains"]
    evidence.append(
        f"ramparts drill → exit {done.returncode}: backup {restore['backup_id']}, "
        f"{restore['rows']} rows of {restore['tables']} tables restored into a scratch "
        f"database, {sum(c['intact'] for c in chains)} of {len(chains)} audit chains and the "
        f"ledger ({report['ledger']['intact']}) verified; RPO {rpo['achieved_seconds']} s of "
        f"{rpo['target_seconds']:g} s, RTO {rto['achieved_seconds']} s of "
        f"{rto['target_seconds']:g} s"
    )
    wrong = _drill_report_holds(report, len(target.tenants()))
    if done.returncode != 0 or not report.get("passed"):
        wrong.append(f"the restore drill did not pass (exit {done.returncode})")
    return wrong


def _within(objective: dict[str, Any], name: str) -> list[str]:
    """An achieved objective, judged from its numbers (never from the drill's own `met`)."""
    achieved, target = objective.get("achieved_seconds"), objective.get("target_seconds")
    if not isinstance(achieved, int | float) or not isinstance(target, int | float):
        return [f"the drill reported no {name} numbers"]
    if not 0 <= achieved <= target:
        return [f"{name} achieved {achieved} s, not within 0 to {target:g} s"]
    return []


def _drill_report_holds(report: dict[str, Any], tenants: int) -> list[str]:
    """What the drill's report says, judged part by part from what it measured, not from its
    own verdict: RPO and RTO within their targets, every restored table holding the rows the
    backup counted, the schema at the backup's heads, every audit chain (one a tenant at
    least) and the ledger's guards and books intact."""
    restore, chains = report["restore"], report["audit"]["chains"]
    ledger = report["ledger"]
    wrong = _within(report["rpo"], "RPO") + _within(report["rto"], "RTO")
    if restore.get("count_mismatches"):
        wrong.append(f"restored row counts differ from the backup's: {restore['count_mismatches']}")
    if not restore.get("tables") or not restore.get("rows"):
        wrong.append("the restore brought back no table or no row")
    if not restore.get("schema_heads_match"):
        wrong.append("the restored schema is not at the backup's heads")
    broken = [str(c.get("tenant")) for c in chains if not c.get("intact")]
    if broken or len(chains) < tenants:
        wrong.append(
            f"audit chains: {len(chains)} verified for {tenants} tenants, broken: {broken}"
        )
    books = [str(b.get("tenant")) for b in ledger.get("books", []) if not b.get("intact")]
    if ledger.get("guards") or books:
        wrong.append(f"the ledger: guards {ledger.get('guards')}, broken books {books}")
    return wrong


def _until(probe: Callable[[], Answer], stopped: Callable[[Answer], bool]) -> tuple[float, Answer]:
    """Probe until `stopped` says so or SWITCH_SECONDS pass: how long it took, the answer."""
    began = time.monotonic()
    while True:
        answer = probe()
        took = time.monotonic() - began
        if stopped(answer) or took > SWITCH_SECONDS:
            return took, answer
        time.sleep(PROBE_SECONDS)


def _off(answer: Answer) -> bool:
    return answer.status == 503 and problem_slug(answer.response) == "ai-disabled"


@contextmanager
def _operator_switch(target: Target, evidence: list[str]) -> Iterator[None]:
    on = operator_command(target, "killswitch", "on", "--reason", "conformance drill", "--json")
    evidence.append(f"operator: ramparts killswitch on → exit {on.returncode}")
    try:
        if on.returncode != 0:
            raise DrillError(f"ramparts killswitch on failed: {redacted(on.stderr)}")
        yield
    finally:
        off = operator_command(target, "killswitch", "off", "--json")
        evidence.append(f"operator: ramparts killswitch off → exit {off.returncode}")


@contextmanager
def _tenant_switch(admin: ApiSession, evidence: list[str], tool: str = "") -> Iterator[None]:
    what = f"tool {tool}" if tool else "the assistant"
    body = {"engaged": True, "tool": tool, "reason": "conformance drill"}
    on = admin.post("/api/assistant/killswitch", json=body)
    evidence.append(answered(f"tenant admin switches {what} off", on))
    try:
        if on.status_code != 200 or not on.json().get("engaged"):
            raise DrillError(answered(f"switching {what} off", on))
        yield
    finally:
        off = admin.post("/api/assistant/killswitch", json=body | {"engaged": False})
        evidence.append(
            answered(f"tenant admin lifts it: engaged {off.json().get('engaged')}", off)
        )


def strikes_of(target: Target, admin: ApiSession, session: ApiSession) -> int:
    """The strikes the abuse limiter counted against `session`'s person in its window."""
    began = (datetime.now(UTC) - timedelta(seconds=STRIKE_WINDOW_SECONDS)).isoformat()
    subject = person(target, session).subject
    return strikes(audit_events(admin, since=began, action="ai:*", actor=subject))


def _killswitch(target: Target, evidence: list[str]) -> list[str]:
    first, last = target.tenants()[0], target.tenants()[-1]
    admin = admin_of(target, first)
    neighbour = target.session(one_per_role_set(target, last)[0])
    declared = Declared.of(target)

    def read_tool(session: ApiSession) -> str | None:
        return next(
            (
                name
                for name in sorted(declared.may_call(person(target, session)))
                if (t := declared.tool(name)) and t.risk is Risk.READ and sample_arguments(t) == {}
            ),
            None,
        )

    # The probe is whoever the abuse limiter holds least against (earlier checks' refusals
    # count): a throttled probe would hide whether the assistant runs again.
    probes = [
        (strikes_of(target, admin, session), session)
        for session in map(target.session, one_per_role_set(target, first))
        if read_tool(session) is not None
    ]
    if not probes:
        raise DrillError(f"nobody of {first} may call a read tool without arguments")
    user = min(probes, key=lambda probe: probe[0])[1]
    tool = read_tool(user) or ""

    def probe(session: ApiSession = user) -> Answer:
        return ask(target, session, "Go on.", calling((tool, {})))

    def ran(answer: Answer) -> bool:
        return answer.status == 200 and [a.get("status") for a in answer.actions()] == ["executed"]

    wrong = []
    with _operator_switch(target, evidence):
        took, answer = _until(probe, _off)
        other = probe(neighbour)
        evidence.append(
            answered(f"global: {tool} {took:.2f} s after", answer.response)
            + "; "
            + answered(f"{last}", other.response)
        )
        if not _off(answer) or not _off(other):
            wrong.append("the operator's global switch did not stop the assistant")
    with _tenant_switch(admin, evidence):
        took, answer = _until(probe, _off)
        other = probe(neighbour)
        evidence.append(
            answered(f"{first}: {tool} {took:.2f} s after", answer.response)
            + "; "
            + answered(f"{last}, not switched", other.response)
        )
        if not _off(answer) or not ran(other):
            wrong.append(f"the switch of {first} did not stop {first} alone")
    with _tenant_switch(admin, evidence, tool):

        def tool_off(answer: Answer) -> bool:
            reasons = [a.get("reason") for a in answer.actions()]
            return reasons == ["this tool is switched off"] and tool not in (answer.shown() or ())

        took, answer = _until(probe, tool_off)
        reasons = [f"{a.get('status')}: {a.get('reason')}" for a in answer.actions()]
        evidence.append(
            f"tool {tool} {took:.2f} s after → {', '.join(reasons)}; offered: "
            f"{tool in (answer.shown() or ())}"
        )
        if not tool_off(answer):
            wrong.append(f"the switch of {tool} did not stop it")
    took, after = _until(probe, ran)
    evidence.append(
        answered(f"all lifted: {tool} {took:.2f} s after", after.response)
        + f" {[a.get('status') for a in after.actions()]}"
    )
    if not ran(after):
        wrong.append("the assistant did not run again once every switch was lifted")
    return wrong


@dataclass(frozen=True)
class _Held:
    """A model's call waiting for approval, and a colleague who may decide it."""

    requester: str
    decider: ApiSession
    tool: str
    approval_id: str


def _held_call(target: Target, tenant: str, evidence: list[str]) -> _Held | None:
    """A write call of a demo user with a colleague of the same roles (not the first user
    of a role set: the switch probes strike them), made after a message with the signs of an
    injection, so it waits for approval. The colleague signs in afresh: deciding needs a
    second factor in the last ten minutes."""
    declared = Declared.of(target)
    people = [u for u in target.report.get("users", []) if u.get("tenant") == tenant]
    probed = set(one_per_role_set(target, tenant))
    for user in people:
        username, roles = str(user["username"]), frozenset(user.get("roles", ()))
        colleagues = [
            str(u["username"])
            for u in people
            if frozenset(u.get("roles", ())) == roles and u["username"] != username
        ]
        if username in probed or not colleagues:
            continue
        session = target.session(username)
        for name in sorted(declared.may_call(person(target, session))):
            tool = declared.tool(name)
            if tool is None or tool.risk is not Risk.WRITE or needs_a_record(tool):
                continue
            if tool.untrusted_rule is not AfterUntrusted.APPROVAL:
                continue
            arguments = sample_arguments(tool)
            if arguments is None:
                continue
            answer = ask(target, session, f"{INJECTION} Go ahead.", calling((name, arguments)))
            action = next(iter(answer.actions()), {})
            evidence.append(
                f"{username} calls {name} after an injection → {action.get('status')}: "
                f"{action.get('reason')}"[:300]
            )
            if action.get("status") == "pending_approval" and action.get("approval_id"):
                decider = target.sign_in(colleagues[0])
                return _Held(username, decider, name, str(action["approval_id"]))
    return None


def _approvals_stopped(target: Target, evidence: list[str]) -> list[str]:
    """A held call approved while its tenant's assistant is switched off, and while its tool
    is: refused each time (503 ai-disabled), the request still pending; rejected once every
    switch is lifted, so nothing waits after the check."""
    tenant = target.tenants()[0]
    held = _held_call(target, tenant, evidence)
    if held is None:
        return ["no write call could be held for approval: the approval path was not tried"]
    admin = admin_of(target, tenant)
    approve = f"/api/approvals/{held.approval_id}/approve"
    wrong = []
    try:
        for tool in ("", held.tool):
            what = f"tool {held.tool}" if tool else "the assistant"
            with _tenant_switch(admin, evidence, tool):
                answer = held.decider.post(approve)
                evidence.append(
                    answered(
                        f"{held.decider.username} approves the held request, {what} off", answer
                    )
                )
            if answer.status_code != 503 or problem_slug(answer) != "ai-disabled":
                wrong.append(f"a held call was approved while {what} was switched off")
    finally:
        rejected = held.decider.post(f"/api/approvals/{held.approval_id}/reject")
        status = rejected.json().get("status") if rejected.status_code == 200 else None
        evidence.append(
            answered(f"switches lifted, {held.decider.username} rejects it", rejected)
            + f": {status}"
        )
    if status != "rejected":
        wrong.append("the held request was not still pending once the switches were lifted")
    return wrong


@check("PLT-4")
def backups_and_killswitch(target: Target) -> Outcome:
    evidence: list[str] = []
    since = now()
    wrong = _drill(target, evidence)
    wrong += _killswitch(target, evidence)
    wrong += _approvals_stopped(target, evidence)
    evidence += cited(
        audit_events(
            admin_of(target, target.tenants()[0]),
            since=since,
            action=Action.KILLSWITCH_SET.value,
        )
    )
    if wrong:
        return fail(PLT4, "; ".join(wrong), evidence)
    return passed(
        PLT4,
        "the restore drill met its RPO and RTO (from its numbers), restored every row the "
        "backup counted, its audit chains and ledger intact; the global, tenant and tool "
        "switches each stopped the calls within a second, and lifted; a held call could not "
        "be approved while the assistant or its tool was switched off",
        evidence,
    )
