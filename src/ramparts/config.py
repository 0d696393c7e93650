"""Settings, profiles and the production guard (control PLT-1).

Every setting is a `RAMPARTS_*` environment variable. Settings are frozen once read: code that
needs a different configuration builds a new `Settings`, it never mutates the shared one.
"""

from __future__ import annotations

import ipaddress
import os
import re
from difflib import get_close_matches
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, unquote, urlsplit

import limits
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
    "APPS_ENTRY_POINT_GROUP",
    "APP_NAME",
    "APP_ROLE",
    "ConfigError",
    "DatabasePooler",
    "KmsBackend",
    "Profile",
    "PspBackend",
    "Settings",
    "load_settings",
    "production_violations",
]

#: The runtime login role. It owns nothing, is not a superuser and cannot bypass RLS.
APP_ROLE = "ramparts_app"
#: What an app may be called (`ramparts.apps`, `RAMPARTS_APPS`), and a role too.
APP_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: The entry-point group an app package publishes its `ramparts.apps.App` under.
APPS_ENTRY_POINT_GROUP = "ramparts.apps"

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
MIN_PROD_HSTS_SECONDS = 31_536_000
#: libpq query keys that would override the login given in the URL's userinfo.
OVERRIDING_QUERY_KEYS = frozenset({"user", "password", "passfile", "service", "options"})
#: Variables with these prefixes belong to tooling (the test suite), not to the settings.
RESERVED_PREFIXES = ("RAMPARTS_TEST_",)


class Profile(StrEnum):
    DEV = "dev"
    STAGE = "stage"
    PROD = "prod"


class DatabasePooler(StrEnum):
    """What stands between the runtime and PostgreSQL (`RAMPARTS_DATABASE_POOLER`)."""

    NONE = "none"
    # PgBouncer in transaction pooling mode: each transaction may run on a different server
    # connection, so nothing may outlive one (every tenant setting is transaction-local
    # already) and psycopg must not prepare statements on the server.
    PGBOUNCER = "pgbouncer"


class KmsBackend(StrEnum):
    LOCAL = "local"
    VAULT = "vault"


class ModelKeyPolicy(StrEnum):
    """Which key a tenant without a model key of its own gets (`ramparts.ai.model_keys`)."""

    TENANT = "tenant"  # none: its messages are refused until an operator sets its key
    SHARED = "shared"  # the installation's key (dev and stage only: tenants would share it)


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
    # Owner URL: runs migrations and tenant provisioning. Both unset -> embedded PostgreSQL.
    database_url: SecretStr | None = None
    # Runtime URL of the ramparts_app role. Unset -> derived from database_url (no password).
    app_database_url: SecretStr | None = None
    # The database connections this instance may hold, over all its workers and pools.
    # Unset -> half of what the server accepts (headroom for migrations, the CLI, others).
    db_max_connections: int | None = Field(default=None, ge=1)
    # `pgbouncer`: RAMPARTS_APP_DATABASE_URL reaches PostgreSQL through PgBouncer in
    # transaction pooling mode (`serve` only: the worker needs a direct connection).
    database_pooler: DatabasePooler = DatabasePooler.NONE
    # Shared limits (the assistant's rate limits and budgets). Unset -> kept in memory, which
    # holds only in one process, so `serve` then runs a single worker.
    redis_url: SecretStr | None = None
    model: str = "offline"
    # Where a remote model endpoint (openai:<model>) runs: a tenant pinned to `eu` reaches
    # only `eu` endpoints. Local adapters (offline, scripted) send data nowhere.
    model_region: str = Field(default="us", pattern=r"^[a-z]{2,8}$")
    # A remote model's API key is each tenant's own (KMS `model/openai/api-key/<tenant id>`);
    # `shared` lets a tenant without one use the installation's key (never under prod).
    model_keys: ModelKeyPolicy = ModelKeyPolicy.TENANT
    # Assistant limits (shared through RAMPARTS_REDIS_URL when set): requests and model tokens.
    ai_user_rate: str = "30/minute"
    ai_tenant_rate: str = "300/minute"
    ai_user_tokens: str = "100000/day"
    ai_tenant_tokens: str = "1000000/day"
    # Tool calls one user message may lead to (run or sent to approval), per risk tier.
    ai_read_calls_per_message: int = Field(default=16, ge=0, le=64)
    ai_write_calls_per_message: int = Field(default=3, ge=0, le=64)
    ai_high_calls_per_message: int = Field(default=1, ge=0, le=64)
    # Model calls one user message may lead to (each may ask for tool calls).
    ai_max_steps: int = Field(default=4, ge=1, le=16)
    # Strikes (a refused tool call, an injection sign, refused content) per user: past the
    # first the user is slowed down, past the second their AI access is locked for an hour.
    ai_throttle_after: str = "5/10 minutes"
    ai_lock_after: str = "10/10 minutes"
    secret_key: SecretStr | None = None
    debug: bool = False
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=1_048_576, gt=0, le=64 * 1_048_576)
    kms_backend: KmsBackend = KmsBackend.LOCAL
    # The local keystore's key-encryption key: a passphrase, or a file outside the checkout.
    # Neither -> a generated key file in the user's config directory (dev and stage).
    kms_passphrase: SecretStr | None = Field(default=None, min_length=12)
    kms_key_file: Path | None = None
    vault_url: str | None = None
    vault_token: SecretStr | None = None
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_ca_file: Path | None = None
    vault_prefix: str = Field(default="ramparts", pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    vault_transit_mount: str = "transit"
    vault_kv_mount: str = "secret"
    psp: PspBackend = PspBackend.SANDBOX
    # Who may scrape /metrics (`ramparts.web.metrics`): a client in one of these networks
    # (CIDRs), or one presenting RAMPARTS_METRICS_TOKEN as a bearer token.
    metrics_networks: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.0/8", "::1/128")
    metrics_token: SecretStr | None = None
    # Where alerts are POSTed as JSON besides the counter and the log (`ramparts.alerts`).
    alert_webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # The job worker (`ramparts worker`): how many times a job runs before it is dead-lettered,
    # the first retry's delay (doubling each time, with jitter, at most an hour), and how long
    # a worker may stay silent before its running jobs are taken back and retried.
    job_max_attempts: int = Field(default=8, ge=1, le=100)
    job_retry_seconds: float = Field(default=15.0, gt=0, le=3600)
    worker_stalled_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Where the PSP's API is: the sandbox's loopback address (set by `demo`, or by `serve`
    # when it starts the sandbox); unset with `stripe`: Stripe's own.
    psp_api_base: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+$")
    # The PSP's publishable key, for its card fields in the payer's browser (`pk_test_…`,
    # `pk_live_…`: public by design). Unset: the sandbox's own when RAMPARTS_PSP_API_BASE is
    # set, otherwise the checkout is unavailable (503 payments-unavailable).
    psp_publishable_key: str | None = Field(default=None, pattern=r"^pk_(test|live)_[A-Za-z0-9_]+$")
    # Velocity limits on attempts to pay (`ramparts.payments.velocity`, PAY-2); declines count.
    # Attempts with one card (by the PSP's fingerprint) per rolling hour, attempts by one payer
    # per rolling day, and the amount one payer may attempt per rolling day, in minor units of
    # each currency (50,000.00 in a two-decimal currency).
    velocity_card_attempts_per_hour: int = Field(default=5, ge=1, le=1000)
    velocity_payer_attempts_per_day: int = Field(default=10, ge=1, le=10_000)
    velocity_payer_amount_per_day: int = Field(default=5_000_000, ge=1, le=10**12)
    hsts_max_age: int = Field(default=63_072_000, ge=0)
    # The OIDC issuer and the base of every absolute URL we hand out.
    public_url: str = "http://127.0.0.1:8000"
    access_token_seconds: int = Field(default=600, ge=30, le=600)
    # How long a recorded event may wait in the queue before it is in its hash chain: every
    # server's sequencer runs well within it and warns when the oldest queued event is older.
    audit_max_lag_seconds: float = Field(default=1.0, gt=0, le=3600)
    refresh_family_seconds: int = Field(default=12 * 3600, ge=300, le=30 * 86400)
    # The installed apps (`ramparts.apps` entry points) this instance serves, by name.
    # Unset -> the installed apps that declare themselves default (`App.default`).
    apps: Annotated[tuple[str, ...] | None, NoDecode] = None

    @field_validator("database_url", "app_database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            dsn = PostgresDsn(value.get_secret_value())
        except ValidationError:
            raise ValueError("must be a postgresql:// URL") from None
        if dsn.scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError("must be a postgresql:// URL")
        # libpq lets these query keys override the login in the URL's userinfo, which would
        # hide who actually connects from every check that reads the userinfo.
        overriding = sorted(OVERRIDING_QUERY_KEYS & parse_qs(dsn.query or "").keys())
        if overriding:
            raise ValueError(f"put credentials in user:password@host, not in ?{overriding[0]}=")
        return value

    @field_validator("app_database_url")
    @classmethod
    def _app_role_only(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and _url_part(value, "username") != APP_ROLE:
            raise ValueError(f"must log in as the runtime role {APP_ROLE!r}")
        return value

    @field_validator("cors_origins", "apps", "metrics_networks", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("apps")
    @classmethod
    def _app_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            if not APP_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an app name (lowercase letters, digits, _)")
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

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network)
            except ValueError:
                raise ValueError(
                    f"{network!r} is not a network (address/prefix, host bits zero)"
                ) from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _http_url(value, "https://ramparts.example")

    @field_validator("model")
    @classmethod
    def _model_spec(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind == "offline" and not arg:
            return value
        if kind in {"openai", "scripted"} and arg:
            return value
        raise ValueError("must be 'offline', 'openai:<model>' or 'scripted:<file>'")

    @field_validator(
        "ai_user_rate",
        "ai_tenant_rate",
        "ai_user_tokens",
        "ai_tenant_tokens",
        "ai_throttle_after",
        "ai_lock_after",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '30/minute'") from None
        return value

    @field_validator("vault_ca_file", "kms_key_file", mode="before")
    @classmethod
    def _file_named(cls, value: object) -> object:
        # An empty variable would be Path(""), that is ".": the current directory taken as the
        # file (for the CA, trusted as a CA store). Refused, like the other empty settings.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a file (unset the variable for none)")
        return value

    @field_validator("vault_url")
    @classmethod
    def _vault_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "https://vault.example:8200")

    @model_validator(mode="after")
    def _one_kms_login(self) -> Settings:
        if self.kms_passphrase is not None and self.kms_key_file is not None:
            raise ValueError("RAMPARTS_KMS_PASSPHRASE and RAMPARTS_KMS_KEY_FILE: set one, not both")
        if self.kms_backend is KmsBackend.VAULT:
            if self.vault_url is None:
                raise ValueError("RAMPARTS_VAULT_URL is required with RAMPARTS_KMS_BACKEND=vault")
            approle = self.vault_role_id is not None and self.vault_secret_id is not None
            if (self.vault_token is not None) == approle:
                raise ValueError(
                    "Vault login: set RAMPARTS_VAULT_TOKEN, or RAMPARTS_VAULT_ROLE_ID and "
                    "RAMPARTS_VAULT_SECRET_ID (one of the two)"
                )
        return self

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None and self.app_database_url is None

    @property
    def transaction_pooler(self) -> bool:
        """Whether the runtime's connections go through a transaction pooler."""
        return self.database_pooler is DatabasePooler.PGBOUNCER

    @property
    def cors_wildcard(self) -> bool:
        return "*" in self.cors_origins


def _http_url(value: str, example: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query:
        raise ValueError(f"must be an http(s) URL without query, e.g. {example}")
    return value.rstrip("/")


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into one clear line.

    An unknown `RAMPARTS_*` variable is an error too: a misspelt `RAMPARTS_PROFLE=prod` must
    not quietly run as dev, without the production guard.
    """
    known = {f"RAMPARTS_{name.upper()}" for name in Settings.model_fields}
    for name in sorted(os.environ):
        ours = name.startswith("RAMPARTS_") and not name.startswith(RESERVED_PREFIXES)
        if ours and name not in known:
            hint = get_close_matches(name, known, n=1)
            suggestion = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(f"{name}: unknown setting{suggestion}")
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
        problems.append(f"{name}: {message}" if field else message)
    return "; ".join(problems)


def _weak(secret: str, min_chars: int) -> bool:
    return (
        secret.lower() in KNOWN_DEFAULT_SECRETS or len(secret) < min_chars or len(set(secret)) < 10
    )


def _url_part(url: SecretStr, part: str) -> str | None:
    value = urlsplit(url.get_secret_value())
    found = getattr(value, part)
    return unquote(found) if isinstance(found, str) else None


def production_violations(settings: Settings, *, demo_data_present: bool) -> list[str]:
    """Every reason the configuration is unfit for production; empty when it is fit.

    Only the `prod` profile is judged: dev and stage may use the embedded database, the local
    keystore and the sandbox PSP on purpose.
    """
    if settings.profile is not Profile.PROD:
        return []
    violations = _database_violations(settings) + _secret_violations(settings)
    if demo_data_present:
        violations.append("demo tenants or users present in the database")
    if settings.debug:
        violations.append("debug is on (RAMPARTS_DEBUG)")
    if settings.model.startswith("scripted:"):
        # It answers from a file anyone who can write it controls: a drill's stand-in.
        violations.append("RAMPARTS_MODEL is a replayed model (scripted:<file>, for drills)")
    if settings.model_keys is ModelKeyPolicy.SHARED:
        # Least privilege: one tenant's model calls never carry a key other tenants use.
        violations.append("RAMPARTS_MODEL_KEYS=shared (tenants would share one model key)")
    if settings.kms_backend is KmsBackend.LOCAL:
        violations.append("local KMS keystore (set RAMPARTS_KMS_BACKEND=vault)")
    elif settings.vault_url is not None and not settings.vault_url.startswith("https://"):
        violations.append("RAMPARTS_VAULT_URL is not https")
    violations += _psp_violations(settings)
    if settings.alert_webhook_url is not None and not settings.alert_webhook_url.startswith(
        "https://"
    ):
        violations.append("RAMPARTS_ALERT_WEBHOOK_URL is not https")
    if settings.cors_wildcard:
        violations.append("CORS wildcard origin '*' (list the allowed origins)")
    plain = [origin for origin in settings.cors_origins if origin.startswith("http://")]
    if plain:
        violations.append(f"CORS origin over plain http: {', '.join(plain)}")
    if not settings.public_url.startswith("https://"):
        violations.append("RAMPARTS_PUBLIC_URL is not https")
    violations += _metrics_violations(settings)
    if settings.hsts_max_age < MIN_PROD_HSTS_SECONDS:
        violations.append(f"RAMPARTS_HSTS_MAX_AGE below one year ({MIN_PROD_HSTS_SECONDS} s)")
    return violations


def _psp_violations(settings: Settings) -> list[str]:
    violations = []
    if settings.psp is PspBackend.SANDBOX:
        violations.append("sandbox PSP (set RAMPARTS_PSP=stripe)")
    if (settings.psp_publishable_key or "").startswith("pk_test_"):
        # Stripe's test mode beside a live PSP: a payer's card would never be charged, and a
        # test-mode secret key in the KMS would make every "verified" payment play money.
        violations.append("RAMPARTS_PSP_PUBLISHABLE_KEY is a test-mode key (pk_test_)")
    if settings.psp_api_base is not None and not settings.psp_api_base.startswith("https://"):
        # The live secret key would travel in clear, and the payment page would trust it.
        violations.append("RAMPARTS_PSP_API_BASE is not https")
    return violations


def _database_violations(settings: Settings) -> list[str]:
    if settings.embedded_database:
        return ["embedded database (set RAMPARTS_APP_DATABASE_URL to a PostgreSQL server)"]
    violations = []
    if settings.database_url is not None:
        violations.append(
            "RAMPARTS_DATABASE_URL (the owner's credentials) is set for the server; "
            "migrate separately and serve with RAMPARTS_APP_DATABASE_URL only"
        )
    app_url = settings.app_database_url
    if app_url is not None:
        password = _url_part(app_url, "password")
        client_cert = "sslcert=" in urlsplit(app_url.get_secret_value()).query
        if password is None and not client_cert:
            violations.append(
                "RAMPARTS_APP_DATABASE_URL has no password or client certificate (sslcert)"
            )
        elif password is not None and _weak(password, MIN_DB_PASSWORD_CHARS):
            violations.append("RAMPARTS_APP_DATABASE_URL has a default or weak password")
    return violations


def _metrics_violations(settings: Settings) -> list[str]:
    """/metrics stays for the scraper: a strong token, and no network that is everyone."""
    violations = []
    token = settings.metrics_token
    if token is not None and _weak(token.get_secret_value(), MIN_SECRET_KEY_CHARS):
        violations.append(
            f"RAMPARTS_METRICS_TOKEN is a default or weak secret "
            f"(need {MIN_SECRET_KEY_CHARS}+ random characters)"
        )
    everyone = [n for n in settings.metrics_networks if ipaddress.ip_network(n).prefixlen == 0]
    if everyone:
        violations.append(
            f"RAMPARTS_METRICS_NETWORKS opens /metrics to every address: {', '.join(everyone)}"
        )
    return violations


def _secret_violations(settings: Settings) -> list[str]:
    violations = []
    if settings.secret_key is None:
        violations.append("RAMPARTS_SECRET_KEY is not set")
    elif _weak(settings.secret_key.get_secret_value(), MIN_SECRET_KEY_CHARS):
        violations.append(
            f"RAMPARTS_SECRET_KEY is a default or weak secret "
            f"(need {MIN_SECRET_KEY_CHARS}+ random characters)"
        )
    if settings.redis_url is None:
        # Without it the assistant's rate limits and budgets live in each process: every API
        # replica (and every `serve` beside another) would grant them once more.
        violations.append(
            "RAMPARTS_REDIS_URL is not set (rate limits and AI budgets would be per process, "
            "granted again by every API replica)"
        )
    else:
        password = _url_part(settings.redis_url, "password")
        if password is None or _weak(password, MIN_DB_PASSWORD_CHARS):
            violations.append("RAMPARTS_REDIS_URL has no password or a weak one")
    return violations
