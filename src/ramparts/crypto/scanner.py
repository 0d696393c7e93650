"""Secret scanning: the function the AI gateway runs over prompts and model output, and the one
CI runs over the repository (`ramparts secrets scan`).

It reports credentials, not personal data: private keys, JWTs, provider API keys, bearer
tokens, a secret-named variable or field given a literal value, and long high-entropy
strings. A finding names its kind and place, never its value. A line that must hold a fake
secret (a test corpus) says so with `pragma: allowlist secret`, the detect-secrets convention.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ramparts.detectors import Finding, Kind, find_sensitive

__all__ = [
    "ALLOW_PRAGMA",
    "Leak",
    "find_configured_secrets",
    "find_secrets",
    "scan_paths",
    "tracked_files",
]

ALLOW_PRAGMA = "pragma: allowlist secret"
#: Files whose long random strings are checksums by design, not secrets.
CHECKSUM_FILES = ("requirements/*.lock",)
#: Tracked files and new ones git does not ignore.
GIT_FILES = ("ls-files", "-z", "--cached", "--others", "--exclude-standard")
CREDENTIAL_KINDS = {Kind.PRIVATE_KEY, Kind.JWT, Kind.API_KEY, Kind.BEARER}

# `client_secret = "…"`, `"password": "…"`: a literal value (8+ characters, no spaces or
# template braces) given to a name that says it is a secret, when it looks like one.
_LITERAL = re.compile(
    r"(?i)[\w-]*(?:password|passwd|passphrase|secret|api_?key|token)[\w-]*[\"']?\s*[:=]\s*"
    r"(?P<mark>[\"'])(?P<value>[^\"'\s{}<>$%]{8,})(?P=mark)"
)
# Words one of which `_LITERAL` needs: most text holds none, and checking for them is far
# cheaper than trying the pattern from every position.
_LITERAL_WORDS = ("password", "passwd", "passphrase", "secret", "api_key", "apikey", "token")
_QUOTED = re.compile(r"[\"'](?P<value>[A-Za-z0-9+/=_-]{32,})[\"']")
# Configuration files (`.env`, YAML, compose, Kubernetes) assign without quoting:
# `RAMPARTS_SECRET_KEY=…`, `password: …`, `- DB_PASSWORD=…`. A value that is a reference
# (`${VAR}`, `<placeholder>`, `{template}`), a path or a code expression is not a secret.
_ASSIGNED = re.compile(
    r"(?i)^\s*(?:export\s+|-\s+)?[\w.-]*(?:password|passwd|passphrase|secret|api_?key|token)"
    r"[\w.-]*\s*[:=]\s*(?P<value>[\w+=.~!*&^@:-][\w+/=.~!*&^@:-]{7,})\s*(?:#.*)?$"
)
# A password in a URL's userinfo: `postgresql://user:…@host`, `redis://:…@host`.
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]*:(?P<value>[^\s@/$%{}<>]{8,})@")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class Leak:
    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _high_entropy(value: str) -> bool:
    """Random-looking: hex above 3 bits a character, base64 above 4.5."""
    return _entropy(value) > (3.0 if _HEX.match(value) else 4.5)


def _secret_like(value: str) -> bool:
    """A password or key has digits or looks random; `"identity:token:issued"`, `"PASSWORD"`
    and `"client_secret_post"` are names, not secrets."""
    return any(c.isdigit() for c in value) or _entropy(value) > 4.0


def find_secrets(text: str, sensitive: list[Finding] | None = None) -> list[Finding]:
    """Credentials in `text`, for the AI gateway (prompts, outputs) and the repository scan.
    `sensitive` is `find_sensitive(text)` when the caller has it already."""
    if sensitive is None:
        sensitive = find_sensitive(text)
    found = [f for f in sensitive if f.kind in CREDENTIAL_KINDS]

    def free(start: int, end: int) -> bool:
        return not any(start < f.end and f.start < end for f in found)

    lowered = text.lower()
    literals = _LITERAL.finditer(text) if any(w in lowered for w in _LITERAL_WORDS) else ()
    for match in literals:
        start, end = match.span("value")
        if free(start, end) and _secret_like(match.group("value")):
            found.append(Finding(Kind.PASSWORD, start, end, match.group("value")))
    quoted = _QUOTED.finditer(text) if '"' in text or "'" in text else ()
    for match in quoted:
        start, end = match.span("value")
        if free(start, end) and _high_entropy(match.group("value")):
            found.append(Finding(Kind.HIGH_ENTROPY, start, end, match.group("value")))
    return sorted(found, key=lambda f: f.start)


def find_configured_secrets(line: str) -> list[Finding]:
    """Credentials that configuration files hold unquoted, for the repository scan
    (prompts are free text: there `find_secrets` alone decides)."""
    found = []
    for pattern in (_ASSIGNED, _URL_PASSWORD):
        for match in pattern.finditer(line):
            if _secret_like(match.group("value")):
                start, end = match.span("value")
                found.append(Finding(Kind.PASSWORD, start, end, match.group("value")))
    return found


def tracked_files(root: Path) -> list[Path]:
    """The files git tracks under `root`, and new ones it does not ignore; every file when
    `root` is not a git checkout."""
    try:
        listed = subprocess.run(  # noqa: S603 - a fixed command, no shell
            ["git", "-C", str(root), *GIT_FILES],  # noqa: S607 - git from PATH
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*") if p.is_file()]
    return [root / name for name in listed.decode().split("\0") if name]


def scan_paths(paths: Iterable[Path], root: Path) -> Iterator[Leak]:
    for path in paths:
        relative = path.relative_to(root) if path.is_relative_to(root) else path
        if any(relative.match(pattern) for pattern in CHECKSUM_FILES):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not source
        for number, line in enumerate(text.splitlines(), 1):
            if ALLOW_PRAGMA in line:
                continue
            findings = find_secrets(line) or find_configured_secrets(line)
            for finding in findings:
                yield Leak(str(relative), number, finding.kind.value)
