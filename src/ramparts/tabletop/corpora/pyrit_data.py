"""The prompt corpora inside the pyrit wheel (`pyrit/datasets/`, MIT).

Read: the jailbreak templates (`jailbreak/templates/**/*.yaml`: jailbreakchat's, the
TrustAIRLab in-the-wild prompts converted to templates, Pliny's and others), each rendered
with one of Ramparts' payloads in its `{{ prompt }}` slot; and the seed datasets that try to
extract a system prompt or credentials (`seed_datasets/local/…`). Templates that need a
parameter other than `prompt` are skipped. The rest of `pyrit/datasets/` is attacker-side
(red-teaming and scoring prompts), remote-dataset loaders, or harms this system is not about.

pyrit writes its data as YAML: reading it needs PyYAML, and only its safe loader is used.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from ramparts.tabletop.corpora.installed import DataFile, InstalledDistribution, relative
from ramparts.tabletop.corpora.model import Attack, CorpusError
from ramparts.tabletop.corpora.own import Payload
from ramparts.tabletop.corpora.templates import fill_jinja, payload_for

__all__ = ["ATTRIBUTION", "load_pyrit"]

PREFIX = "pyrit/datasets/"
_TEMPLATES = "jailbreak/templates/"
#: Seed datasets of secret extraction, and which of their seeds to take (None: all).
_EXTRACTION: dict[str, re.Pattern[str] | None] = {
    "seed_datasets/local/psfuzz_steal_system.prompt": None,
    "seed_datasets/local/garak/system_prompt_extraction.prompt": None,
    # Its other seeds ask for copyrighted text, not this system's secrets.
    "seed_datasets/local/airt/leakage.prompt": re.compile(
        r"(?i)system (?:prompt|message)|instructions|api keys?|passwords?|credentials"
        r"|tokens|connection strings?"
    ),
}
ATTRIBUTION = (
    "PyRIT, the Python Risk Identification Tool (Microsoft AI Red Team, "
    "https://github.com/Azure/PyRIT). Each template file names its own authors and source "
    "(jailbreakchat, the TrustAIRLab in-the-wild jailbreak prompts of Shen et al., "
    "Pliny and others)."
)


def load_pyrit(
    distribution: InstalledDistribution, payloads: Sequence[Payload]
) -> tuple[list[Attack], list[str]]:
    """The attacks pyrit's data yields, and notes on what was skipped. Raises
    `CorpusError` when PyYAML is not installed."""
    parse = _yaml_parser()
    source = f"pyrit {distribution.version}"
    licence = distribution.licence
    attacks: list[Attack] = []
    notes: list[str] = []
    unusable = 0
    for found in distribution.data_files(PREFIX + _TEMPLATES, (".yaml", ".yml")):
        if isinstance(found, str):
            notes.append(f"pyrit: skipped {found}")
            continue
        document = _document(parse, found)
        template = document.get("value") if document else None
        attack_id = f"pyrit:{relative(found.path, PREFIX)}"
        payload = payload_for(attack_id, payloads)
        text = (
            fill_jinja(template, payload)
            if isinstance(template, str) and document and document.get("parameters") == ["prompt"]
            else None
        )
        if not text:
            unusable += 1
            continue
        attacks.append(
            Attack(attack_id, "jailbreak", text, payload.goal, source, licence, found.path)
        )
    if unusable:
        notes.append(
            f"pyrit: {unusable} jailbreak template(s) skipped: they need parameters other than "
            "`prompt` or do not render"
        )
    for name, keep in _EXTRACTION.items():
        for found in distribution.data_files(PREFIX + name, (".prompt",)):
            if isinstance(found, str):
                notes.append(f"pyrit: skipped {found}")
                continue
            seeds = _seeds(_document(parse, found))
            if seeds is None:
                notes.append(f"pyrit: skipped {found.path}: no `seeds` list of values")
                continue
            for index, text in enumerate(seeds):
                if keep is None or keep.search(text):
                    attack_id = f"pyrit:{relative(found.path, PREFIX)}#{index}"
                    attacks.append(
                        Attack(
                            attack_id,
                            "secret-exfiltration",
                            text,
                            "exfiltrate_secret",
                            source,
                            licence,
                            found.path,
                        )
                    )
    return attacks, notes


def _yaml_parser() -> Callable[[str], Any]:
    """PyYAML's safe loader (its C version when built): never one that builds objects."""
    try:
        module = importlib.import_module("yaml")  # optional: only pyrit's corpora need it
    except ImportError as error:
        raise CorpusError(
            "pyrit's corpora are YAML and PyYAML is not installed: pip install pyyaml "
            "(scripts/bootstrap redteam installs it)"
        ) from error
    loader = getattr(module, "CSafeLoader", None) or module.SafeLoader

    def parse(text: str) -> Any:
        try:
            return module.load(text, Loader=loader)  # a safe loader, C or Python
        except module.YAMLError:
            return None

    return parse


def _document(parse: Callable[[str], Any], found: DataFile) -> dict[str, Any] | None:
    document = parse(found.text)
    return document if isinstance(document, dict) else None


def _seeds(document: dict[str, Any] | None) -> list[str] | None:
    seeds = document.get("seeds") if document else None
    if not isinstance(seeds, list):
        return None
    values = [seed.get("value") for seed in seeds if isinstance(seed, dict)]
    return [value.strip() for value in values if isinstance(value, str) and value.strip()]
