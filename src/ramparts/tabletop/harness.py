"""What a tabletop scenario plays with (`Tabletop`) and how each of its steps is judged
(`Step`): what was expected, what was observed, the evidence seen (answers, audit events),
holding only when it checked something and every check held. A step that could not finish
is a FAIL with the reason, never skipped into a pass."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.report import Row, Verdict
from ramparts.tabletop.script import Seen
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["NOT_SCRIPTED", "Step", "StepFailed", "Tabletop", "answered", "problem_type"]

#: What an AI step observes when the drill cannot play the instance's model.
NOT_SCRIPTED = (
    "the instance's model is not scripted: pass --script (the file its "
    "RAMPARTS_MODEL=scripted:FILE replays) so the drill can play a compromised model"
)


class StepFailed(Exception):  # noqa: N818 - a verdict on the step, not a fault of the drill
    """The step cannot hold, for the reason given (an expectation the rest depends on did not
    hold, or what it needs is missing): it stops there and FAILs with that reason."""

    def __init__(self, reason: str, *, recorded: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recorded = recorded  # already among the step's failures (`Step.require`)


def problem_type(response: httpx.Response) -> str | None:
    """The slug of a problem+json answer (`signature-refused`), None for anything else."""
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    try:
        kind = response.json().get("type")
    except (ValueError, AttributeError):
        return None
    return str(kind).rsplit(":", 1)[-1] if kind else None


def answered(response: httpx.Response) -> str:
    """An answer as evidence: `POST /path → 409 payment-not-paid` (with the problem's slug
    when it is one)."""
    line = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    kind = problem_type(response)
    return f"{line} {kind}" if kind else line


@dataclass
class Step:
    """One step being played: its expectations are checked one by one (`check`, `require`),
    and it holds only when it checked something and every check held."""

    id: str
    title: str
    expected: str
    observed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    checks: int = 0

    def check(self, holds: bool, observed: str) -> bool:
        """Record what was observed; the step fails unless it `holds`."""
        self.checks += 1
        (self.observed if holds else self.failed).append(observed)
        return holds

    def require(self, holds: bool, observed: str) -> None:
        """As `check`, and stop the step when it does not hold (what follows depends on it)."""
        if not self.check(holds, observed):
            raise StepFailed(observed, recorded=True)

    def saw(self, response: httpx.Response) -> httpx.Response:
        """Keep an answer as evidence; the answer, for chaining."""
        self.evidence.append(answered(response))
        return response

    def cite(self, events: list[dict[str, Any]]) -> None:
        """Keep audit events as evidence (their place in the chain and hash)."""
        self.evidence += cited(events)

    def note(self, observed: str) -> None:
        """Something observed that is not itself an expectation (the scene being set)."""
        self.observed.append(observed)

    def row(self, section: str, seconds: float) -> Row:
        holds = self.checks > 0 and not self.failed
        if self.checks == 0 and not self.failed:
            self.failed.append("the step checked nothing")
        return Row(
            self.id,
            self.title,
            Verdict.PASS if holds else Verdict.FAIL,
            self.expected,
            "; ".join([*self.failed, *self.observed]),
            self.evidence,
            section=section,
            seconds=seconds,
        )


class Tabletop:
    """What a scenario plays with: the instance (`target`), its people signed in for this run,
    the compromised model (`play`, `seen`), the audit trail (`audit`), and `step` to record
    each step's verdict. One per run; `close` signs its people out of this process."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self._section = ""
        self._people: dict[str, ApiSession] = {}

    # --- the report -----------------------------------------------------------------------

    def section(self, title: str) -> None:
        """The steps from here on belong to `title` (a phase of the scenario)."""
        self._section = title

    @contextmanager
    def step(self, step_id: str, title: str, expected: str) -> Iterator[Step]:
        """Play one step: what happens inside is its verdict. A failed `require` stops it; any
        other exception (the instance did not answer, a drill error) is its FAIL, with the
        reason: the scenario goes on with the next step."""
        began = time.monotonic()
        step = Step(step_id, title, expected)
        try:
            yield step
        except StepFailed as stopped:
            if not stopped.recorded:
                step.failed.append(stopped.reason)
        except Exception as exc:  # noqa: BLE001 - whatever stopped the step is its FAIL
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            step.failed.append(f"the step could not complete: {reason}")
        self.rows.append(step.row(self._section, time.monotonic() - began))

    # --- the people -----------------------------------------------------------------------

    def person(self, username: str) -> ApiSession:
        """`username`, signed in once for this run through the real login: a fresh sign-in,
        as deciding an approval needs a second factor in the last ten minutes."""
        if username not in self._people:
            self._people[username] = self.target.sign_in(username)
        return self._people[username]

    @staticmethod
    def subject(session: ApiSession) -> str:
        """Who `session` is to the audit trail (its access token's `sub`): read, not
        verified, from the token the instance issued."""
        try:
            payload = session.access_token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError, binascii.Error):
            raise DrillError(f"{session.username}'s access token is not a JWT") from None
        return str(claims.get("sub", ""))

    # --- the compromised model ------------------------------------------------------------

    def play(self, turns: list[dict[str, Any]]) -> None:
        """What the model answers the next message: `turns`, one per model call. A step that
        needs the model FAILs when the instance's model cannot be played."""
        if self.target.script is None:
            raise StepFailed(NOT_SCRIPTED)
        self.target.script.play(turns)

    def seen(self) -> list[Seen]:
        """What the model was shown by the calls that replayed the last `play`."""
        if self.target.script is None:
            raise StepFailed(NOT_SCRIPTED)
        return self.target.script.seen()

    # --- the audit trail ------------------------------------------------------------------

    @staticmethod
    def moment() -> str:
        """Now, as the audit trail's `since` of a step (a little earlier: clocks differ)."""
        return now()

    def audit(
        self,
        tenant: str,
        since: str,
        *,
        action: str | None = None,
        decision: str | None = None,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """`tenant`'s audit events since `since` (an action tag or prefix such as `ai:*`, a
        decision), those `where` keeps, read as an auditor does: the tenant's admin through
        `GET /api/audit/events`."""
        admins = self.target.users_with("admin", tenant)
        if not admins:
            raise DrillError(f"the demo credentials have no admin of {tenant} to read its audit")
        events = audit_events(self.person(admins[0]), since=since, action=action, decision=decision)
        return [e for e in events if where is None or where(e)]

    def close(self) -> None:
        for session in self._people.values():
            session.client.close()
        self._people.clear()
