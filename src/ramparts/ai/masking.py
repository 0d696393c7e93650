"""PII masking and secret refusal for everything that goes to a model (AI-2).

Before a model sees text, cards (Luhn-checked), SSNs, IBANs, emails and phone numbers are
replaced by tokens such as `[EMAIL_1]`, stable within a conversation, so the model can still
refer to "the same email". The tokens are turned back into values only inside an authorized
tool call and in the user's own view. Credentials (keys, tokens, passwords) are never masked
and sent: the whole message is refused. A tenant may forbid categories outright (DLP).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ramparts.crypto.scanner import find_secrets
from ramparts.detectors import Kind, find_sensitive

__all__ = ["MASKED_KINDS", "Masker", "RefusedContentError"]

MASKED_KINDS = frozenset({Kind.CARD, Kind.IBAN, Kind.SSN, Kind.EMAIL, Kind.PHONE})
_TOKEN = re.compile(r"\[(?:CARD|IBAN|SSN|EMAIL|PHONE)_[0-9]{1,4}\]")


class RefusedContentError(Exception):
    """The text holds a credential, or a category the tenant forbids; `kinds` says which."""

    def __init__(self, kinds: Collection[str]) -> None:
        self.kinds = sorted(set(kinds))
        super().__init__(f"refused: the text holds {', '.join(self.kinds)}")


@dataclass
class Masker:
    """One conversation's reversible tokens. `forbidden` are the tenant's DLP categories."""

    forbidden: frozenset[Kind] = frozenset()
    _tokens: dict[str, str] = field(default_factory=dict)  # value -> token
    _values: dict[str, str] = field(default_factory=dict)  # token -> value

    def mask(self, text: str) -> str:
        secrets_found = find_secrets(text)
        if secrets_found:
            raise RefusedContentError([f.kind.value for f in secrets_found])
        findings = [f for f in find_sensitive(text) if f.kind in MASKED_KINDS]
        refused = {f.kind.value for f in findings if f.kind in self.forbidden}
        if refused:
            raise RefusedContentError(refused)
        parts, last = [], 0
        for finding in findings:
            parts += [text[last : finding.start], self._token(finding.kind, finding.value)]
            last = finding.end
        parts.append(text[last:])
        return "".join(parts)

    def mask_value(self, value: Any) -> Any:
        """`mask` applied to every string inside a JSON value (a tool result, say)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_value(v) for v in value]
        return value

    def unmask(self, value: Any) -> Any:
        """Tokens back to values, inside every string of a JSON value; unknown tokens (made
        up by the model) stay as they are."""
        if isinstance(value, str):
            return _TOKEN.sub(lambda m: self._values.get(m.group(), m.group()), value)
        if isinstance(value, dict):
            return {k: self.unmask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unmask(v) for v in value]
        return value

    def _token(self, kind: Kind, value: str) -> str:
        token = self._tokens.get(value)
        if token is None:
            count = sum(1 for t in self._values if t.startswith(f"[{kind.value}_")) + 1
            token = f"[{kind.value}_{count}]"
            self._tokens[value], self._values[token] = token, value
        return token

    def state(self) -> dict[str, str]:
        """token -> value, to keep with the conversation (sealed at rest)."""
        return dict(self._values)

    @classmethod
    def restore(cls, state: dict[str, str], forbidden: frozenset[Kind] = frozenset()) -> Masker:
        masker = cls(forbidden)
        for token, value in state.items():
            masker._values[token], masker._tokens[value] = value, token
        return masker
