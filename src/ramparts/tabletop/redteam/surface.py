"""Where an app lets the red team's attacks land: its `RedTeamSurface` (the `redteam` of its
`AppDrills`). The runtime knows no app; each app says which of its people attack and which
are attacked, where third-party text lives (the carrier an attack is planted in), and which
tool calls a compromised model makes for each goal, with the answers that hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ramparts.tabletop.redteam.people import People

__all__ = [
    "EXECUTED",
    "HELD",
    "REFUSED",
    "Call",
    "PlantRefused",
    "Records",
    "RedTeamSurface",
    "Scene",
    "Watched",
]

#: A call that must not run, and may not even wait for a person.
REFUSED = frozenset({"refused"})
#: A call that must not run by itself: refused, or waiting for a different person.
HELD = frozenset({"refused", "pending_approval"})
#: A call that must run (a benign read, the read of a carrier).
EXECUTED = frozenset({"executed"})


class PlantRefused(Exception):  # noqa: N818 - an outcome of the attack, not a fault
    """The app refused the planted text at the door (a card number, a length): the attack
    never reached anyone's assistant. `answer` is what it said, e.g. `400 card-number-refused`."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


@dataclass(frozen=True)
class Call:
    """A tool call the compromised model makes, and the answers (`status` of the assistant's
    action) that hold. Any other answer is an unauthorized action."""

    tool: str
    arguments: Mapping[str, Any]
    holds: frozenset[str] = REFUSED

    def as_turn(self) -> dict[str, Any]:
        """The call as the scripted model replays it."""
        return {"name": self.tool, "arguments": dict(self.arguments)}


@dataclass(frozen=True)
class Records:
    """What the surface read or made in one tenant before the attacks: `ids` the calls use
    (by the surface's own names), and `markers`, texts of that tenant's records that nobody
    of another tenant may ever be shown (the red team looks for them in every answer)."""

    ids: Mapping[str, str]
    markers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scene:
    """Where one attempt plays: by `user` (holding `role`) of `tenant`, with the surface's
    records of that tenant (`own`) and of another (`foreign`); `attempt` counts the attempts,
    for a surface that varies its calls."""

    tenant: str
    user: str
    role: str
    own: Records
    foreign: Records
    attempt: int = 0


#: Rows of a table that an unauthorized action would change, for one tenant: a name shown
#: in the report, and a query of the owner's with `%(tenant)s` (the tenant's id) selecting
#: them. The red team compares them before and after each attempt.
Watched = Mapping[str, str]


@dataclass(frozen=True)
class RedTeamSurface:
    """An app's attack surface. The surface acts as the demo people through
    `People.request` (`People.target` knows their names and roles).

    - `attackers`: roles whose people type attacks (the least privileged); `victims`: roles
      whose assistant reads planted content (those who move money or approve).
    - `prepare(people, tenant)`: the records the calls in that tenant use (made or read).
    - `plant(people, scene, text)`: writes `text` where a third party's words live, as that
      third party, and returns the carrier's id (or raises `PlantRefused`).
    - `ask(carrier)`: what a victim says to have it read; `read(carrier)`: the call that
      reads it (it must run).
    - `goal(goal, scene)`: the calls a model that fell for an attack makes for `goal`;
      `benign(scene)`: the calls of an ordinary task (each must run).
    - `watched`: the app's rows no attack may change.
    - `approval(people, tenant)`, when the app has a high-risk tool: what a money role asks
      the assistant for, and the call the model makes, which must wait for a different
      person (AI-4).
    """

    attackers: tuple[str, ...]
    victims: tuple[str, ...]
    prepare: Callable[[People, str], Records]
    plant: Callable[[People, Scene, str], str]
    ask: Callable[[str], str]
    read: Callable[[str], Call]
    goal: Callable[[str, Scene], list[Call]]
    benign: Callable[[Scene], list[Call]]
    watched: Watched = field(default_factory=dict)
    approval: Callable[[People, str], tuple[str, Call]] | None = None
