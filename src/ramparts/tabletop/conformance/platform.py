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

from ramparts.ai.tools import Risk
from ramparts.audit.events import Action
from ramparts.tabletop.conformance import edge, supply_chain
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.declared import Declared, sample_arguments
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
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["backups_and_killswitch", "edge", "prod_refuses_unsafe_starts", "supply_chain"]

PLT1 = (
    "under the prod profile `ramparts serve` refuses to start (exit 3, each violation named, "
    "nothing served) with demo users, a default secret, debug on, the local KMS or the "
    "sandbox PSP"
)
PLT4 = (
    "`ramparts drill` restores a fresh backup, verified, within its RPO and RTO; the "
    "kill-switch (global, per tenant, per tool) stops AI tool calls within a second, and "
    "lifts"
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


@check("PLT-1")
def prod_refuses_unsafe_starts(target: Target) -> Outcome:
    profile = target.environment.get("RAMPARTS_PROFILE", "dev")
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
    evidence = [
        f"the instance itself runs the {profile} profile, where demo users, the local KMS "
        "and the sandbox PSP are allowed on purpose",
    ]
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
    if done.returncode != 0 or not report.get("passed"):
        return ["the restore drill did not pass"]
    return []


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


def _killswitch(target: Target, evidence: list[str]) -> list[str]:
    first, last = target.tenants()[0], target.tenants()[-1]
    admin = admin_of(target, first)
    user = target.session(one_per_role_set(target, first)[0])
    neighbour = target.session(one_per_role_set(target, last)[0])
    declared = Declared.of(target)
    tool = next(
        (
            name
            for name in sorted(declared.may_call(person(target, user)))
            if (t := declared.tool(name)) and t.risk is Risk.READ and sample_arguments(t) == {}
        ),
        None,
    )
    if tool is None:
        raise DrillError(f"{user.username} may call no read tool without arguments")

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


@check("PLT-4")
def backups_and_killswitch(target: Target) -> Outcome:
    evidence: list[str] = []
    since = now()
    wrong = _drill(target, evidence)
    wrong += _killswitch(target, evidence)
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
        "the restore drill met its RPO and RTO; the global, tenant and tool switches each "
        "stopped the calls within a second, and lifted",
        evidence,
    )
