"""Structured logging to stderr: JSON lines outside dev, readable lines in dev; never local
variables.

Tracebacks are rendered without frame locals, which could hold passwords, tokens or keys.
"""

from __future__ import annotations

import logging
import sys

import structlog

from ramparts.config import Profile, Settings

__all__ = ["configure_logging", "log_to_stderr"]


def log_to_stderr() -> None:
    """Before settings are read (the CLI): keep stdout for the command's own output."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def configure_logging(settings: Settings) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.profile is Profile.DEV:
        processors.append(
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        )
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if settings.debug else logging.INFO
        ),
        cache_logger_on_first_use=True,
    )
