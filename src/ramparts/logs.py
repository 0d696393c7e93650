"""Structured logging to stderr: JSON lines outside dev, readable lines in dev; never local
variables, never a secret or raw personal data.

Tracebacks are rendered without frame locals, which could hold passwords, tokens or keys.
Every line then passes `redact_secrets`, the last line of defence behind code that should
never have logged such a value: a field named like a secret (`authorization`, `cookie`,
`password`, `token`, `otp`, `card_number`, ...) is replaced whatever it holds, and a value
that looks like a secret or personal data (a bearer token, a JWT, an API key, an email
address, a card number, an IBAN, ...; `ramparts.detectors`) is replaced where it appears,
tracebacks included, as is a URL's query parameter named like a secret (`?code=`).
A request's lines carry its `request_id` and `trace_id` (`ramparts.web.telemetry`).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from ramparts.config import Profile, Settings
from ramparts.detectors import find_sensitive, is_secret_name

__all__ = ["REDACTED", "configure_logging", "log_to_stderr", "redact_secrets"]

REDACTED = "[REDACTED]"
#: Fields the logging itself or the telemetry layer fills with values it made or checked.
_OWN_FIELDS = frozenset({"timestamp", "level", "request_id", "trace_id"})
#: Words that make a field a secret besides `ramparts.detectors.is_secret_name`'s: headers
#: (`proxy-authorization`, `set-cookie`) and card data by any name.
_SECRET_WORDS = ("authorization", "cookie", "card", "cvv", "cvc")
_QUERY_PARAMETER = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")
_MAX_DEPTH = 8
#: Short strings repeat (event names, routes, roles): each is scanned once.
_CACHED_CHARS = 200
_CACHED_STRINGS = 4096
_scanned: dict[str, str] = {}
#: Values that hold no text (a big int is checked: a card number may come as a number).
_PLAIN = frozenset({bool, float, type(None)})
_Container = dict[Any, Any] | list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any]


@functools.lru_cache(maxsize=1024)  # field names repeat: each is judged once
def _secret_field(name: str) -> bool:
    lowered = name.lower()
    return is_secret_name(name) or any(word in lowered for word in _SECRET_WORDS)


def _hide_query_secret(match: re.Match[str]) -> str:
    if _secret_field(match[2]):
        return f"{match[1]}{match[2]}={REDACTED}"
    return match[0]


def _scan(text: str) -> str:
    pieces, position = [], 0
    for finding in find_sensitive(text):
        pieces += [text[position : finding.start], f"[{finding.kind}]"]
        position = finding.end
    pieces.append(text[position:])
    cleaned = "".join(pieces)
    if "=" in cleaned:
        cleaned = _QUERY_PARAMETER.sub(_hide_query_secret, cleaned)
    return cleaned


def _clean_text(text: str) -> str:
    if len(text) > _CACHED_CHARS:
        return _scan(text)
    done = _scanned.get(text)
    if done is None:
        if len(_scanned) >= _CACHED_STRINGS:
            _scanned.clear()
        done = _scanned[text] = _scan(text)
    return done


def _clean(value: object, depth: int) -> object:
    kind = type(value)
    if kind is str:  # nearly every value: first
        return _clean_text(value)  # type: ignore[arg-type]
    if kind in _PLAIN:
        return value
    if isinstance(value, bool | float) or value is None:
        return value
    if isinstance(value, int):  # a card number may come as a number
        return value if abs(value) < 10**11 else _clean_text(str(value))
    if isinstance(value, dict | list | tuple | set | frozenset):
        return _clean_container(value, depth)
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    # A string, or anything else: the renderers show it as its str().
    return _clean_text(value if isinstance(value, str) else str(value))


def _clean_container(value: _Container, depth: int) -> object:
    if depth >= _MAX_DEPTH:
        return "[TOO DEEP]"
    if isinstance(value, dict):
        return {
            key: REDACTED if _secret_field(str(key)) else _clean(item, depth + 1)
            for key, item in value.items()
        }
    return [_clean(item, depth + 1) for item in value]


def redact_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor that takes secrets and personal data out of a log line."""
    for key, value in event_dict.items():
        if key in _OWN_FIELDS:
            continue
        event_dict[key] = REDACTED if _secret_field(key) else _clean(value, 0)
    return event_dict


def log_to_stderr() -> None:
    """Before settings are read (the CLI): keep stdout for the command's own output."""
    structlog.configure(
        processors=[*_chain(), structlog.dev.ConsoleRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _chain(*, utc: bool = False) -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso" if utc else "%Y-%m-%d %H:%M:%S", utc=utc),
        # Rendered here (without locals) so the redaction reads the traceback too.
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def log_renderer(settings: Settings) -> structlog.types.Processor:
    """JSON lines, but for readable lines in dev."""
    if settings.profile is Profile.DEV:
        return structlog.dev.ConsoleRenderer()
    return structlog.processors.JSONRenderer()


def configure_logging(settings: Settings) -> None:
    """Our own lines (structlog) and the libraries' (the standard `logging`: uvicorn's,
    SQLAlchemy's) go through the same chain to stderr: the same fields, the same redaction,
    JSON outside dev."""
    level = logging.DEBUG if settings.debug else logging.INFO
    structlog.configure(
        processors=[*_chain(utc=True), log_renderer(settings)],
        # One write per line, newline included: workers sharing stderr never interleave
        # halves of two lines (print writes the line and its newline apart).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *_chain(utc=True),
                log_renderer(settings),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # httpx logs every outbound call at INFO, URL and query string included (the PSP, the
    # model, the alert webhook): its failures reach us as exceptions, logged by their caller.
    logging.getLogger("httpx").setLevel(logging.INFO if settings.debug else logging.WARNING)
