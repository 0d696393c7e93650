"""Structured logging: JSON lines outside dev, readable lines in dev; never local variables.

Tracebacks are rendered without frame locals, which could hold passwords, tokens or keys.
"""

from __future__ import annotations

import logging

import structlog

from ramparts.config import Profile, Settings

__all__ = ["configure_logging"]


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
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.DEBUG if settings.debug else logging.INFO
        ),
        cache_logger_on_first_use=True,
    )
