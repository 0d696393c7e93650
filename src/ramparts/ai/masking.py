"""PII masking and secret refusal for everything that goes to a model (AI-2).

Before a model sees text, cards (Luhn-checked), SSNs, IBANs, emails and phone numbers are
replaced by tokens such as `[EMAIL_1]`, and so are the names of the tenant's own people (the
names detectable without guessing: those in its directory). Tokens are stable within a
conversation, so the model can still refer to "the same email". They turn back into values
only inside an authorized tool call and in the user's own view. Credentials (keys, tokens,
passwords, announced or not) are never masked and sent: a user's message holding one is
refused, and in a tool result or the model's own answer it is replaced by `[PASSWORD]` (no
token, no way back). Every kind the detectors know is either masked or treated as a secret,
so what the model sees, and the conversation stores, holds neither. A tenant may forbid
categories outright (DLP).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ramparts.crypto.scanner import find_secrets
from ramparts.detectors import PERSONAL_KINDS, SECRET_KINDS, Finding, Kind, find_sensitive

__all__ = ["MASKED_KINDS", "Masker", "RefusedContentError", "redacted"]

MASKED_KINDS = PERSONAL_KINDS
_TOKEN = re.compile(r"\[(?:CARD|IBAN|SSN|EMAIL|PHONE|NAME)_[0-9]{1,4}\]")
NAME = "NAME"
MIN_NAME_CHARS = 4  # shorter display names ("Al", "U") would mask ordinary words


class RefusedContentError(Exception):
    """The text holds a credential, or a category the tenant forbids; `kinds` says which."""

    def __init__(self, kinds: Collection[str]) -> None:
        self.kinds = sorted(set(kinds))
        super().__init__(f"refused: the text holds {', '.join(self.kinds)}")


@functools.lru_cache(maxsize=64)
def _name_pattern(names: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern for a directory, compiled once (every message of the tenant uses it)."""
    kept = sorted((n for n in names if len(n) >= MIN_NAME_CHARS), key=len, reverse=True)
    if not kept:
        return None
    alternatives = "|".join(re.escape(n) for n in kept)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


@dataclass
class Masker:
    """One conversation's reversible tokens. `forbidden` are the tenant's DLP categories."""

    forbidden: frozenset[Kind] = frozenset()
    names: frozenset[str] = frozenset()  # people's names to mask (the tenant's directory)
    _tokens: dict[str, str] = field(default_factory=dict)  # value -> token
    _values: dict[str, str] = field(default_factory=dict)  # token -> value
    _counts: Counter[str] = field(default_factory=Counter)  # tokens made, by kind
    _names: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._names = _name_pattern(self.names)

    def mask(self, text: str, *, redact_secrets: bool = False) -> str:
        """`text` with personal data as tokens. A credential refuses the text, or with
        `redact_secrets` (what a tool returned) is replaced by its kind."""
        sensitive = find_sensitive(text)
        secrets = _secrets(text, sensitive)
        if secrets and not redact_secrets:
            raise RefusedContentError([f.kind.value for f in secrets])
        findings = [f for f in sensitive if f.kind in MASKED_KINDS and not _overlaps(f, secrets)]
        refused = {f.kind.value for f in findings if f.kind in self.forbidden}
        if refused:
            raise RefusedContentError(refused)
        return self._replace(text, findings, secrets)

    def scrub(self, text: str) -> str:
        """`mask` that never refuses, for the model's own answer: credentials and forbidden
        kinds become their kind (a model that saw neither has no business writing them)."""
        sensitive = find_sensitive(text)
        secrets = _secrets(text, sensitive)
        removed = secrets + [f for f in sensitive if f.kind in self.forbidden]
        findings = [f for f in sensitive if f.kind in MASKED_KINDS and not _overlaps(f, removed)]
        return self._replace(text, findings, removed)

    def _replace(self, text: str, findings: list[Finding], removed: list[Finding]) -> str:
        spans = [(f.start, f.end, f.kind.value, f.value) for f in findings]
        spans += [(f.start, f.end, "", f.kind.value) for f in removed]
        if self._names is not None:
            for match in self._names.finditer(text):
                start, end = match.span()
                if not any(start < e and s < end for s, e, _, _ in spans):
                    spans.append((start, end, NAME, match.group()))
        parts, last = [], 0
        for start, end, kind, value in sorted(spans):
            parts += [text[last:start], self._token(kind, value) if kind else f"[{value}]"]
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def scrub_value(self, value: Any) -> Any:
        """`scrub` applied to every string inside a JSON value, keys included: what the model
        wrote in a tool call, stored and replayed as masked as its answer (and run unmasked)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_value(v) for v in value]
        return value

    def mask_value(self, value: Any, *, redact_secrets: bool = False) -> Any:
        """`mask` applied to every string inside a JSON value (a tool result, say)."""
        if isinstance(value, str):
            return self.mask(value, redact_secrets=redact_secrets)
        if isinstance(value, dict):  # keys too: a map keyed by IBAN or name holds PII there
            return {
                self.mask(k, redact_secrets=redact_secrets): self.mask_value(
                    v, redact_secrets=redact_secrets
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.mask_value(v, redact_secrets=redact_secrets) for v in value]
        return value

    def unmask(self, value: Any) -> Any:
        """Tokens back to values, inside every string of a JSON value; unknown tokens (made
        up by the model) stay as they are."""
        if isinstance(value, str):
            return _TOKEN.sub(lambda m: self._values.get(m.group(), m.group()), value)
        if isinstance(value, dict):
            return {self.unmask(k): self.unmask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unmask(v) for v in value]
        return value

    def values_in(self, text: str) -> list[str]:
        """The values behind the placeholders `text` holds (those this masker made)."""
        return [self._values[t] for t in _TOKEN.findall(text) if t in self._values]

    def has_token(self, value: Any) -> bool:
        """Whether a placeholder is left in a JSON value (after `unmask`: one never made)."""
        if isinstance(value, str):
            return _TOKEN.search(value) is not None
        if isinstance(value, dict):
            return any(self.has_token(v) for v in value.values())
        if isinstance(value, list):
            return any(self.has_token(v) for v in value)
        return False

    def _token(self, kind: str, value: str) -> str:
        token = self._tokens.get(value)
        if token is None:
            self._counts[kind] += 1
            token = f"[{kind}_{self._counts[kind]}]"
            self._tokens[value], self._values[token] = token, value
        return token

    def state(self) -> dict[str, str]:
        """token -> value, to keep with the conversation (sealed at rest)."""
        return dict(self._values)

    @classmethod
    def restore(
        cls,
        state: dict[str, str],
        forbidden: frozenset[Kind] = frozenset(),
        names: frozenset[str] = frozenset(),
    ) -> Masker:
        masker = cls(forbidden, names)
        for token, value in state.items():
            masker._values[token], masker._tokens[value] = value, token
            masker._counts[token[1:].split("_")[0]] += 1
        return masker


def redacted(value: Any) -> Any:
    """A JSON value with every detected kind replaced by its name (`[EMAIL]`, `[PASSWORD]`),
    keys included: for what is stored outside a conversation, so has no tokens to keep."""
    if isinstance(value, str):
        sensitive = find_sensitive(value)
        secrets = _secrets(value, sensitive)
        found = secrets + [f for f in sensitive if not _overlaps(f, secrets)]
        parts, last = [], 0
        for finding in sorted(found, key=lambda f: f.start):
            parts += [value[last : finding.start], f"[{finding.kind.value}]"]
            last = finding.end
        parts.append(value[last:])
        return "".join(parts)
    if isinstance(value, dict):
        return {redacted(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _secrets(text: str, sensitive: list[Finding]) -> list[Finding]:
    """Every credential: the detectors' secret kinds (an announced password included), and
    what the repository scan finds besides (a quoted random string, say)."""
    found = [f for f in sensitive if f.kind in SECRET_KINDS]
    found += [f for f in find_secrets(text, sensitive) if not _overlaps(f, found)]
    return found


def _overlaps(finding: Finding, others: list[Finding]) -> bool:
    return any(finding.start < o.end and o.start < finding.end for o in others)
