"""Settings, profiles and the production guard (control PLT-1).

Every setting is a `RAMPARTS_*` environment variable. Settings are frozen once read: code that
needs a different configuration builds a new `Settings`, it never mutates the shared one.
"""

from __future__ import annotations

import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    PostgresDsn,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "APP_ROLE",
    "ConfigError",
    "KmsBackend",
    "Profile",
    "PspBackend",
    "Settings",
    "load_settings",
    "production_violations",
    "secret_key",
]

#: The runtime login role. It owns nothing, is not a superuser and cannot bypass RLS.
APP_ROLE = "ramparts_app"

#: Secrets that ship in tutorials, compose files and our own docs. Never acceptable in prod.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "",
        "admin",
        "changeme",
        "change-me",
        "changeit",
        "default",
        "dev",
        "development",
        "insecure",
        "letmein",
        "password",
        "postgres",
        "ramparts",
        "secret",
        "secret-key",
        "test",
    }
)
MIN_SECRET_KEY_CHARS = 32
MIN_DB_PASSWORD_CHARS = 16


class Profile(StrEnum):
    DEV = "dev"
    STAGE = "stage"
    PROD = "prod"


class KmsBackend(StrEnum):
    LOCAL = "local"
    VAULT = "vault"


class PspBackend(StrEnum):
    SANDBOX = "sandbox"
    STRIPE = "stripe"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    """Process configuration, read from `RAMPARTS_*` variables."""

    model_config = SettingsConfigDict(env_prefix="RAMPARTS_", frozen=True, extra="ignore")

    profile: Profile = Profile.DEV
    home: Path = Path(".ramparts")
    # Owner URL: runs migrations and tenant provisioning. Unset -> embedded PostgreSQL.
    database_url: SecretStr | None = None
    # Runtime URL for the ramparts_app role. Unset -> derived from database_url.
    app_database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    model: str = "offline"
    secret_key: SecretStr | None = None
    debug: bool = False
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=1_048_576, gt=0, le=64 * 1_048_576)
    kms_backend: KmsBackend = KmsBackend.LOCAL
    psp: PspBackend = PspBackend.SANDBOX
    hsts_max_age: int = Field(default=63_072_000, ge=0)

    @field_validator("database_url", "app_database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        try:
            dsn = PostgresDsn(raw)
        except ValidationError:
            raise ValueError("must be a postgresql:// URL") from None
        if dsn.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("app_database_url")
    @classmethod
    def _app_role_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user = PostgresDsn(value.get_secret_value()).hosts()[0].get("username")
            if user != APP_ROLE:
                raise ValueError(f"must log in as the runtime role {APP_ROLE!r}")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin == "*":
                continue
            scheme, sep, rest = origin.partition("://")
            if scheme not in {"http", "https"} or not sep or not rest or "/" in rest:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value

    @field_validator("model")
    @classmethod
    def _model_spec(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind == "offline" and not arg:
            return value
        if kind in {"openai", "scripted"} and arg:
            return value
        raise ValueError("must be 'offline', 'openai:<model>' or 'scripted:<file>'")

    @model_validator(mode="after")
    def _app_url_needs_owner_url(self) -> Settings:
        if self.app_database_url is not None and self.database_url is None:
            raise ValueError(
                "RAMPARTS_APP_DATABASE_URL needs RAMPARTS_DATABASE_URL (the owner URL) as well"
            )
        return self

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def cors_wildcard(self) -> bool:
        return "*" in self.cors_origins


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into one clear line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"RAMPARTS_{field.upper()}" if field else "settings"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "; ".join(problems)


def secret_key(settings: Settings) -> SecretStr:
    """The key that signs CSRF tokens and similar server-side state.

    Outside prod an unset key is generated once per install and kept in RAMPARTS_HOME (mode
    0600), so no default key ever exists. In prod the production guard insists it is set.
    """
    if settings.secret_key is not None:
        return settings.secret_key
    path = settings.home / "secret_key"
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return SecretStr(path.read_text().strip())


def _weak(secret: str, min_chars: int) -> bool:
    return (
        secret.lower() in KNOWN_DEFAULT_SECRETS or len(secret) < min_chars or len(set(secret)) < 10
    )


def _url_password(url: SecretStr | None) -> str | None:
    if url is None:
        return None
    password = PostgresDsn(url.get_secret_value()).hosts()[0].get("password")
    return password if isinstance(password, str) else None


def production_violations(settings: Settings, *, demo_data_present: bool) -> list[str]:
    """Every reason the configuration is unfit for production; empty when it is fit.

    Only the `prod` profile is judged: dev and stage may use the embedded database, the local
    keystore and the sandbox PSP on purpose.
    """
    if settings.profile is not Profile.PROD:
        return []
    violations = []
    if settings.embedded_database:
        violations.append("embedded database (set RAMPARTS_DATABASE_URL to a PostgreSQL server)")
    if demo_data_present:
        violations.append("demo tenants or users present in the database")
    if settings.secret_key is None:
        violations.append("RAMPARTS_SECRET_KEY is not set")
    elif _weak(settings.secret_key.get_secret_value(), MIN_SECRET_KEY_CHARS):
        violations.append(
            f"RAMPARTS_SECRET_KEY is a default or weak secret "
            f"(need {MIN_SECRET_KEY_CHARS}+ random characters)"
        )
    for name, url in (
        ("RAMPARTS_DATABASE_URL", settings.database_url),
        ("RAMPARTS_APP_DATABASE_URL", settings.app_database_url),
    ):
        password = _url_password(url)
        if password is not None and _weak(password, MIN_DB_PASSWORD_CHARS):
            violations.append(f"{name} has a default or weak password")
    if settings.debug:
        violations.append("debug is on (RAMPARTS_DEBUG)")
    if settings.kms_backend is KmsBackend.LOCAL:
        violations.append("local KMS keystore (set RAMPARTS_KMS_BACKEND=vault)")
    if settings.psp is PspBackend.SANDBOX:
        violations.append("sandbox PSP (set RAMPARTS_PSP=stripe)")
    if settings.cors_wildcard:
        violations.append("CORS wildcard origin '*' (list the allowed origins)")
    return violations
