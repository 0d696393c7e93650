"""A fast local prompt-injection detector: defense in depth, never the only defense.

Patterns and heuristics over user input and untrusted content. A hit does not block anything on
its own (a detector can be evaded; the gateway's guarantees come from provenance and policy,
not from this); it raises the risk of the conversation, so its calls need more trust, and it is
audited. No model is downloaded or run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["InjectionReport", "scan"]

_SIGNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.DOTALL))
    for name, pattern in [
        (
            "override",
            r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}?\b(?:previous|prior|above|"
            r"earlier|all|any|your|the)\b.{0,30}?\b(?:instructions?|rules?|prompts?|guidelines?|"
            r"directions?|polic(?:y|ies))",
        ),
        ("new_instructions", r"\b(?:new|updated|real|actual)\s+(?:instructions?|task|orders?)\s*:"),
        (
            "role_change",
            r"\b(?:you are now|from now on,? you|act as|pretend to be|roleplay as)\b",
        ),
        ("system_prompt", r"\b(?:system|developer)\s*(?:prompt|message|instructions?)\b"),
        ("fake_turn", r"(?:^|\n)\s*(?:system|assistant|tool)\s*:|<\|?(?:im_start|system)\|?>"),
        (
            "tool_push",
            r"\b(?:call|invoke|use|run|execute)\b.{0,20}?\b(?:tool|function)\b|\"tool_calls\"|"
            r"\b(?:issue_refund|charge_deposit|approve_disbursement)\b",
        ),
        (
            "money_push",
            r"\b(?:refund|transfer|wire|pay(?:ment)?|send)\b.{0,40}?\b(?:immediately|urgent(?:ly)?|"
            r"now|right away|without (?:asking|approval|confirmation))\b",
        ),
        ("secrecy", r"\b(?:do not|don't|never)\s+(?:tell|inform|mention|show|alert)\b"),
        (
            "exfiltration",
            r"!\[[^\]]*\]\(https?://[^)]*[?&][^)]*\)|\b(?:send|post|forward|upload)\b.{0,40}?"
            r"https?://",
        ),
        ("hidden_text", r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]"),
    ]
)


@dataclass(frozen=True)
class InjectionReport:
    signs: tuple[str, ...]

    @property
    def hit(self) -> bool:
        return bool(self.signs)


def scan(text: str) -> InjectionReport:
    return InjectionReport(tuple(name for name, pattern in _SIGNS if pattern.search(text)))
