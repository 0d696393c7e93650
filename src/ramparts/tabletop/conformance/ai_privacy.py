"""Live check of AI-2: personal data in a user's message reaches the model as tokens only
(the scripted model's witness shows what it was sent), a tenant's DLP rule blocks a kind
outright, and a tenant pinned to a region reaches no model endpoint of another region (a
second server of the instance with a remote endpoint in another region, `operating`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from ramparts.audit.events import Action
from ramparts.tabletop.conformance.checks import Outcome, check, fail, passed
from ramparts.tabletop.conformance.model_stub import model_stub
from ramparts.tabletop.conformance.operating import second_server
from ramparts.tabletop.conformance.playing import (
    admin_of,
    answered,
    ask,
    one_per_role_set,
    problem_slug,
)
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["pii_stays_home"]

AI2 = (
    "cards, SSNs, IBANs, emails and phones in a message reach the model as tokens only and "
    "come back restored to the user; a tenant's DLP rule refuses its kind outright; a tenant "
    "pinned to a region reaches no model endpoint of another region"
)
#: One value of each kind the gateway masks but cards (test values: an unissued SSN, the IBAN
#: of the standard's example, a reserved mail domain, a fictional phone number). A card
#: number never gets as far: the edge refuses any request that carries one (PAY-1).
PERSONAL = {
    "SSN": "219-09-9999",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "EMAIL": "drill.pii@example.com",
    "PHONE": "+1 415 555 0199",
}
MESSAGE = (
    f"Please note my SSN {PERSONAL['SSN']}, IBAN {PERSONAL['IBAN']}, mail {PERSONAL['EMAIL']} "
    f"and phone {PERSONAL['PHONE']}."
)
CARD = "4111 1111 1111 1111"  # the payment networks' test Visa number
#: The kind the DLP rule blocks while the check runs.
BLOCKED = "IBAN"
#: What the model's answer repeats: the token the gateway made for the email.
ECHO = "[EMAIL_1]"


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _leaks(shown: str) -> list[str]:
    """The kinds whose value reached the model, as written or by its digits alone."""
    digits = _digits(shown)
    return [
        kind
        for kind, value in PERSONAL.items()
        if value in shown or (len(_digits(value)) >= 9 and _digits(value) in digits)
    ]


@check("AI-2")
def pii_stays_home(target: Target) -> Outcome:
    tenant = target.tenants()[0]
    auditor = admin_of(target, tenant)
    # The last of the tenant's role sets: spares the first ones, which other checks lead with.
    session = target.session(one_per_role_set(target, tenant)[-1])
    since = now()
    evidence: list[str] = []
    wrong: list[str] = []

    answer = ask(target, session, MESSAGE, [{"text": f"Noted: {ECHO}"}])
    shown = "\n".join(seen.text() for seen in answer.seen)
    leaked = _leaks(shown)
    tokens = sorted(set(re.findall(r"\[(SSN|IBAN|EMAIL|PHONE)_\d+\]", shown)))
    reply = str(answer.body().get("reply", ""))
    evidence.append(
        answered("a message with an SSN, IBAN, email and phone", answer.response)
        + f"; the model was shown tokens for {', '.join(tokens) or 'nothing'}"
        + f" and {len(leaked)} raw value(s)"
    )
    if answer.status != 200 or not answer.seen:
        wrong.append("the message did not reach the model")
    if leaked:
        wrong.append(f"the model was shown the raw {', '.join(leaked)}")
    if tokens != sorted(PERSONAL):
        wrong.append(f"tokens for {', '.join(tokens) or 'nothing'}, not for every kind")
    restored = PERSONAL["EMAIL"] in reply
    evidence.append(f"the model answered {ECHO!r}; the user read the email back: {restored}")
    if not restored:
        wrong.append("the user's own view did not restore the token")
    carded = ask(target, session, f"My card is {CARD}.", [{"text": "noted"}])
    evidence.append(
        answered("a message with a card number", carded.response)
        + f"; model calls: {len(carded.seen)}"
    )
    if carded.status != 400 or carded.seen:
        wrong.append(f"a card number was not refused before the model ({carded.status})")

    wrong += _dlp_blocks(target, auditor, session, evidence)
    wrong += _pinned(target, evidence)
    evidence += cited(
        audit_events(auditor, since=since, action=Action.CONTENT_REFUSED.value)
        + audit_events(auditor, since=since, action=Action.DLP_RULES_SET.value)
    )
    if wrong:
        return fail(AI2, "; ".join(wrong), evidence)
    return passed(
        AI2,
        "the model saw tokens for every kind and no raw value, the user got them back, and a "
        "card number was refused before it; "
        f"the DLP rule on {BLOCKED} refused the message before any model call; the pinned "
        "tenant's message never reached the other region's endpoint, whose own region's "
        "tenant it served",
        evidence,
    )


@contextmanager
def _dlp_rule(auditor: ApiSession, kind: str) -> Iterator[list[str]]:
    """The tenant's DLP rules with `kind` added, put back as they were afterwards."""
    before = auditor.get("/api/assistant/dlp")
    if before.status_code != 200:
        raise DrillError(answered("GET /api/assistant/dlp", before))
    rules = list(before.json().get("forbidden", []))
    changed = auditor.put("/api/assistant/dlp", json={"forbidden": sorted({*rules, kind})})
    try:
        yield [answered(f"the tenant admin forbids {kind}: PUT /api/assistant/dlp", changed)]
    finally:
        auditor.put("/api/assistant/dlp", json={"forbidden": rules})


def _dlp_blocks(
    target: Target, auditor: ApiSession, session: ApiSession, evidence: list[str]
) -> list[str]:
    with _dlp_rule(auditor, BLOCKED) as lines:
        evidence += lines
        answer = ask(target, session, MESSAGE, [{"text": "noted"}])
    evidence.append(
        answered(f"the same message under the {BLOCKED} rule", answer.response)
        + f"; model calls: {len(answer.seen)}"
    )
    after = auditor.get("/api/assistant/dlp").json().get("forbidden", [])
    evidence.append(f"the DLP rules put back: {after or 'none'}")
    if answer.status != 422 or problem_slug(answer.response) != "content-refused":
        return [f"the {BLOCKED} rule did not refuse the message ({answer.status})"]
    if answer.seen:
        return [f"the message refused under the {BLOCKED} rule still reached the model"]
    if BLOCKED in after:
        return ["the DLP rule set by the check could not be lifted"]
    return []


def _pinned(target: Target, evidence: list[str]) -> list[str]:
    """The first tenant's people ask a second server whose only model endpoint is remote, in
    another tenant's region: refused, nothing reaches the endpoint; that tenant's people
    are served by it."""
    tenants = [target.tenant(slug) for slug in target.tenants()]
    home, others = tenants[0], [t for t in tenants[1:] if t.get("region") != tenants[0]["region"]]
    if not others:
        return ["every tenant is in one region: no other region to be kept from"]
    abroad = others[0]
    region = str(abroad["region"])
    near = target.session(one_per_role_set(target, str(home["slug"]))[-1])
    far = target.session(one_per_role_set(target, str(abroad["slug"]))[-1])
    with model_stub() as (stub, url):
        settings = {
            "RAMPARTS_MODEL": "openai:drill-stand-in",
            "RAMPARTS_MODEL_REGION": region,
            "OPENAI_BASE_URL": url,
            "OPENAI_API_KEY": "drill-stand-in",  # pragma: allowlist secret
            # That one key for every tenant (the policy AI-3 refuses): this check is the region.
            "RAMPARTS_MODEL_KEYS": "shared",
        }
        with second_server(target, settings) as base:
            kept = _ask_at(base, near)
            reached_by_home = stub.count()
            served = _ask_at(base, far)
    evidence.append(
        f"a second server whose only model endpoint is in {region}: "
        f"{home['slug']} ({home['region']}) → {kept.status_code} {problem_slug(kept)}, "
        f"{reached_by_home} request(s) reached the endpoint; "
        f"{abroad['slug']} ({region}) → {served.status_code}, {stub.count()} request(s) in all"
    )
    wrong = []
    if kept.status_code != 503 or problem_slug(kept) != "no-model-endpoint" or reached_by_home:
        wrong.append(f"{home['slug']} ({home['region']}) reached a {region} model endpoint")
    if served.status_code != 200 or stub.count() < 1:
        wrong.append(f"{abroad['slug']} was not served by its own region's endpoint")
    return wrong


def _ask_at(base: str, session: ApiSession) -> httpx.Response:
    """`session`'s message to the assistant of the server at `base` (its token is valid
    there: the same keys and issuer)."""
    with httpx.Client(base_url=base, timeout=60) as client:
        return client.post(
            "/api/assistant",
            json={"message": "What can you tell me?"},
            # As a proxy in front of it would: the instance's public host, which it serves.
            headers={
                "Authorization": f"Bearer {session.access_token}",
                "Host": urlsplit(session.target.base_url).netloc,
            },
        )
