"""Who plays the attempts: the demo people of each role, signed in once and again when their
token runs out, each attempt given to the one the abuse limiter has the least against.

The assistant's abuse limiter counts strikes per person (a refused tool call, an injection
sign, refused content) and slows them down, then locks them (AI-3). The red team earns strikes
by design, so it spreads its attempts over every person of a role, and a person the limiter
stopped (429, or 403 `ai-locked`) is set aside: the limiter working is an observation of the
report, never an attack held nor a benign task failed.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ramparts.tabletop.target import ApiSession, Target

__all__ = ["People", "Restraint"]


@dataclass(frozen=True)
class Restraint:
    """How a red team that shares its instance with other checks holds back (the AI-4
    check's sample): it attacks from `tenants` only, makes at most `calls` goal calls per
    attempt, and gives nobody more than `strikes` strikes within the limiter's window,
    counting those they had before it began, so that it slows nobody down whom a later check
    needs. None: no such limit. `window_seconds`: how long the limiter remembers a strike.
    """

    tenants: tuple[str, ...] | None = None
    calls: int | None = None
    strikes: int | None = None
    window_seconds: float = 600.0


class People:
    """The drill's sessions and the strikes it earned, per person. Surfaces act through it
    too (`request` as a person), so a long run signs people in again as their tokens end."""

    def __init__(self, target: Target, restraint: Restraint | None = None) -> None:
        self.target = target
        self.restraint = restraint or Restraint()
        #: strikes each person had before the run, by user id (see `Restraint.strikes`)
        self.earlier: Counter[str] = Counter()
        self._sessions: dict[str, ApiSession] = {}
        # Each sign-in spends a TOTP step (a third within 30 s waits for the clock), so the
        # target's own session of a person comes first; people dropped since are signed in
        # here again, and those sessions are ours to close.
        self._dropped: set[str] = set()
        self._owned: set[str] = set()
        self.strikes: Counter[str] = Counter()
        #: person → why the limiter set them aside
        self.stopped: dict[str, str] = {}
        self._tools: dict[str, dict[str, str]] = {}

    def session(self, username: str) -> ApiSession:
        """`username` signed in: the target's session, or a fresh one once it was dropped."""
        if username not in self._sessions:
            if username in self._dropped:
                self._sessions[username] = self.target.sign_in(username)
                self._owned.add(username)
            else:
                self._sessions[username] = self.target.session(username)
        return self._sessions[username]

    def request(self, username: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request as `username`, signed in again once when their token has run out."""
        answer = self.session(username).request(method, path, **kwargs)
        if answer.status_code == 401:
            self.drop(username)
            answer = self.session(username).request(method, path, **kwargs)
        return answer

    def drop(self, username: str) -> None:
        """Forget `username`'s session: the next request signs them in afresh."""
        session = self._sessions.pop(username, None)
        self._dropped.add(username)
        if session is not None and username in self._owned:
            session.client.close()
            self._owned.discard(username)

    def pick(
        self, tenant: str, roles: Sequence[str], cost: Callable[[str, str], int]
    ) -> tuple[str, str] | None:
        """The person of `tenant` holding one of `roles` with the fewest strikes, not set
        aside by the limiter, who can take `cost(user, role)` more within the restraint;
        and their role. None when there is none."""
        cap = self.restraint.strikes
        candidates = []
        for index, role in enumerate(roles):
            for user in self.target.users_with(role, tenant):
                if user in self.stopped:
                    continue
                struck = self.strikes[user] + (self.earlier[self.user_id(user)] if cap else 0)
                if cap is None or struck + cost(user, role) <= cap:
                    candidates.append((struck, index, user, role))
        if not candidates:
            return None
        _, _, user, role = min(candidates)
        return user, role

    def user_id(self, username: str) -> str:
        """`username`'s user id, as the audit trail names them (their token's subject)."""
        token = self.session(username).access_token
        claims = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        return str(payload["sub"])

    def offered(self, username: str) -> dict[str, str]:
        """The tools the assistant offers `username` (name → risk), as the instance says."""
        if username not in self._tools:
            answer = self.request(username, "GET", "/api/assistant/tools")
            tools = answer.json() if answer.status_code == 200 else []
            self._tools[username] = {str(t["name"]): str(t["risk"]) for t in tools}
        return self._tools[username]

    def close(self) -> None:
        for username in list(self._sessions):
            self.drop(username)
