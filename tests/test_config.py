"""Settings validation and the production guard (control PLT-1)."""

from __future__ import annotations

import os

import pytest

from ramparts.config import ConfigError, Settings, load_settings, production_violations

STRONG_KEY = "q8Z2vN4xR7tL1mK9pW3sY6cB0dF5hJ8e"  # pragma: allowlist secret
STRONG_DB_PASSWORD = "Vq7-Lm2x9Kp4Rt8Zs1"  # pragma: allowlist secret
VAULT_TOKEN = "hvs.CAESIJ1vYXVsdC10b2tlbi1mb3ItdGVzdHM"  # pragma: allowlist secret
CLEAN_PROD = {
    "RAMPARTS_PROFILE": "prod",
    "RAMPARTS_APP_DATABASE_URL": f"postgresql://ramparts_app:{STRONG_DB_PASSWORD}@db/ramparts",
    "RAMPARTS_SECRET_KEY": STRONG_KEY,
    "RAMPARTS_KMS_BACKEND": "vault",
    "RAMPARTS_VAULT_URL": "https://vault.example.com:8200",
    "RAMPARTS_VAULT_TOKEN": VAULT_TOKEN,
    "RAMPARTS_PSP": "stripe",
    "RAMPARTS_CORS_ORIGINS": "https://app.example.com",
    "RAMPARTS_PUBLIC_URL": "https://ramparts.example.com",
    "RAMPARTS_REDIS_URL": f"redis://:{STRONG_DB_PASSWORD}@redis:6379/0",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("RAMPARTS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_from(env: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name, value in values.items():
        env.setenv(name, value)
    return load_settings()


def test_clean_prod_configuration_has_no_violations(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(env, CLEAN_PROD)
    assert production_violations(settings, demo_data_present=False) == []


def test_a_strong_metrics_token_and_private_networks_are_fit_for_prod(
    env: pytest.MonkeyPatch,
) -> None:
    scraping = {
        "RAMPARTS_METRICS_TOKEN": "x7Kq2Lm9Vt4Rp8Zs1Nb6Hc3Jd5Fg0WyE",  # pragma: allowlist secret
        "RAMPARTS_METRICS_NETWORKS": "10.0.0.0/8, fd00::/8",
    }
    settings = settings_from(env, {**CLEAN_PROD, **scraping})
    assert settings.metrics_networks == ("10.0.0.0/8", "fd00::/8")
    assert production_violations(settings, demo_data_present=False) == []


def test_client_certificate_instead_of_password(env: pytest.MonkeyPatch) -> None:
    url = "postgresql://ramparts_app@db/r?sslmode=verify-full&sslcert=/run/app.crt"
    settings = settings_from(env, {**CLEAN_PROD, "RAMPARTS_APP_DATABASE_URL": url})
    assert production_violations(settings, demo_data_present=False) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"RAMPARTS_APP_DATABASE_URL": None}, "embedded database"),
        ({"RAMPARTS_DATABASE_URL": "postgresql://owner@db/r"}, "RAMPARTS_DATABASE_URL (the owner"),
        ({"RAMPARTS_SECRET_KEY": None}, "RAMPARTS_SECRET_KEY is not set"),
        ({"RAMPARTS_SECRET_KEY": "changeme"}, "RAMPARTS_SECRET_KEY is a default or weak"),
        ({"RAMPARTS_SECRET_KEY": "a" * 64}, "RAMPARTS_SECRET_KEY is a default or weak"),
        (
            {"RAMPARTS_SECRET_KEY": "short-but-random-8Xq"},  # pragma: allowlist secret
            "RAMPARTS_SECRET_KEY is a default",
        ),
        (
            {"RAMPARTS_APP_DATABASE_URL": "postgresql://ramparts_app:password@db/r"},
            "RAMPARTS_APP_DATABASE_URL has a default or weak password",
        ),
        (
            {"RAMPARTS_APP_DATABASE_URL": "postgresql://ramparts_app@db/r?sslmode=verify-full"},
            "RAMPARTS_APP_DATABASE_URL has no password or client certificate",
        ),
        ({"RAMPARTS_REDIS_URL": "redis://127.0.0.1:6379/0"}, "RAMPARTS_REDIS_URL has no password"),
        ({"RAMPARTS_REDIS_URL": "redis://:redis@127.0.0.1/0"}, "RAMPARTS_REDIS_URL has no pass"),
        ({"RAMPARTS_DEBUG": "true"}, "debug is on"),
        ({"RAMPARTS_MODEL": "scripted:/srv/attack.json"}, "RAMPARTS_MODEL is a replayed model"),
        ({"RAMPARTS_KMS_BACKEND": "local"}, "local KMS keystore"),
        (
            {"RAMPARTS_VAULT_URL": "http://vault.example.com:8200"},
            "RAMPARTS_VAULT_URL is not https",
        ),
        ({"RAMPARTS_PSP": "sandbox"}, "sandbox PSP"),
        ({"RAMPARTS_PSP_API_BASE": "http://127.0.0.1:12111"}, "RAMPARTS_PSP_API_BASE is not"),
        (
            {"RAMPARTS_ALERT_WEBHOOK_URL": "http://alerts.example.com/hook"},
            "RAMPARTS_ALERT_WEBHOOK_URL is not https",
        ),
        ({"RAMPARTS_CORS_ORIGINS": "https://app.example.com,*"}, "CORS wildcard"),
        ({"RAMPARTS_CORS_ORIGINS": "http://app.example.com"}, "CORS origin over plain http"),
        ({"RAMPARTS_HSTS_MAX_AGE": "0"}, "RAMPARTS_HSTS_MAX_AGE below one year"),
        ({"RAMPARTS_PUBLIC_URL": "http://ramparts.example.com"}, "RAMPARTS_PUBLIC_URL is not"),
        ({"RAMPARTS_METRICS_TOKEN": "metrics-token"}, "RAMPARTS_METRICS_TOKEN is a default or"),
        (
            {"RAMPARTS_METRICS_NETWORKS": "10.0.0.0/8,0.0.0.0/0"},
            "RAMPARTS_METRICS_NETWORKS opens /metrics to every address: 0.0.0.0/0",
        ),
        ({"RAMPARTS_METRICS_NETWORKS": "::/0"}, "RAMPARTS_METRICS_NETWORKS opens /metrics to"),
    ],
)
def test_each_violation_is_reported(
    env: pytest.MonkeyPatch, change: dict[str, str | None], expected: str
) -> None:
    values = {**CLEAN_PROD, **change}
    settings = settings_from(env, {k: v for k, v in values.items() if v is not None})
    violations = production_violations(settings, demo_data_present=False)
    assert len(violations) == 1
    assert violations[0].startswith(expected)


def test_demo_data_is_a_violation(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(env, CLEAN_PROD)
    assert production_violations(settings, demo_data_present=True) == [
        "demo tenants or users present in the database"
    ]


def test_all_violations_are_listed_together(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        env, {"RAMPARTS_PROFILE": "prod", "RAMPARTS_DEBUG": "1", "RAMPARTS_CORS_ORIGINS": "*"}
    )
    violations = production_violations(settings, demo_data_present=True)
    # embedded, demo data, secret key, no Redis, debug, KMS, PSP, wildcard, http public URL
    assert len(violations) == 9


def test_dev_and_stage_are_not_judged(env: pytest.MonkeyPatch) -> None:
    for profile in ("dev", "stage"):
        settings = settings_from(env, {"RAMPARTS_PROFILE": profile, "RAMPARTS_DEBUG": "1"})
        assert production_violations(settings, demo_data_present=True) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RAMPARTS_PROFILE", "production", "RAMPARTS_PROFILE: Input should be 'dev', 'stage' or"),
        ("RAMPARTS_PROFLE", "prod", "RAMPARTS_PROFLE: unknown setting (did you mean RAMPARTS_PRO"),
        ("RAMPARTS_MAX_BODY_BYTES", "lots", "RAMPARTS_MAX_BODY_BYTES: Input should be a valid"),
        ("RAMPARTS_MAX_BODY_BYTES", "0", "RAMPARTS_MAX_BODY_BYTES: Input should be greater"),
        ("RAMPARTS_DATABASE_URL", "sqlite:///x.db", "RAMPARTS_DATABASE_URL: must be a post"),
        ("RAMPARTS_APP_DATABASE_URL", "postgresql://postgres@db/r", "RAMPARTS_APP_DATABASE_URL"),
        (
            "RAMPARTS_DATABASE_URL",
            "postgresql://app@db/r?user=postgres",
            "RAMPARTS_DATABASE_URL: put credentials in user:password@host, not in ?user=",
        ),
        (
            "RAMPARTS_APP_DATABASE_URL",
            "postgresql://ramparts_app@db/r?options=-c%20role%3Dpostgres",
            "RAMPARTS_APP_DATABASE_URL: put credentials in user:password@host, not in ?options=",
        ),
        (
            "RAMPARTS_DATABASE_URL",
            "postgresql://db/r?password=hunter2hunter2",
            "RAMPARTS_DATABASE_URL: put credentials in user:password@host, not in ?password=",
        ),
        ("RAMPARTS_CORS_ORIGINS", "https://a.example/path", "RAMPARTS_CORS_ORIGINS: "),
        ("RAMPARTS_MODEL", "gpt", "RAMPARTS_MODEL: must be 'offline'"),
        ("RAMPARTS_DEBUG", "maybe", "RAMPARTS_DEBUG: Input should be a valid boolean"),
        ("RAMPARTS_ACCESS_TOKEN_SECONDS", "3600", "RAMPARTS_ACCESS_TOKEN_SECONDS: Input should be"),
        ("RAMPARTS_AUDIT_MAX_LAG_SECONDS", "0", "RAMPARTS_AUDIT_MAX_LAG_SECONDS: Input should be"),
        (
            "RAMPARTS_AUDIT_MAX_LAG_SECONDS",
            "nan",
            "RAMPARTS_AUDIT_MAX_LAG_SECONDS: Input should be",
        ),
        ("RAMPARTS_AUDIT_MAX_LAG_SECONDS", "-1", "RAMPARTS_AUDIT_MAX_LAG_SECONDS: Input should be"),
        ("RAMPARTS_AI_MAX_STEPS", "0", "RAMPARTS_AI_MAX_STEPS: Input should be"),
        ("RAMPARTS_AI_LOCK_AFTER", "often", "RAMPARTS_AI_LOCK_AFTER: 'often' is not a rate"),
        ("RAMPARTS_PUBLIC_URL", "ramparts.example", "RAMPARTS_PUBLIC_URL: must be an http(s)"),
        ("RAMPARTS_VAULT_URL", "vault:8200", "RAMPARTS_VAULT_URL: must be an http(s) URL"),
        ("RAMPARTS_VAULT_PREFIX", "Ramparts/x", "RAMPARTS_VAULT_PREFIX: String should match"),
        ("RAMPARTS_KMS_PASSPHRASE", "", "RAMPARTS_KMS_PASSPHRASE: Value should have at least 12"),
        # Empty would be the current directory: for the CA, trusted as a CA store.
        ("RAMPARTS_VAULT_CA_FILE", "", "RAMPARTS_VAULT_CA_FILE: must name a file (unset"),
        ("RAMPARTS_VAULT_CA_FILE", " ", "RAMPARTS_VAULT_CA_FILE: must name a file (unset"),
        ("RAMPARTS_KMS_KEY_FILE", "", "RAMPARTS_KMS_KEY_FILE: must name a file (unset"),
        (
            "RAMPARTS_METRICS_NETWORKS",
            "10.0.0.1/8",
            "RAMPARTS_METRICS_NETWORKS: '10.0.0.1/8' is not a network",
        ),
        ("RAMPARTS_METRICS_NETWORKS", "loopback", "RAMPARTS_METRICS_NETWORKS: 'loopback' is not"),
    ],
)
def test_malformed_setting_names_the_variable(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"RAMPARTS_KMS_BACKEND": "vault"}, "RAMPARTS_VAULT_URL is required"),
        (
            {"RAMPARTS_KMS_BACKEND": "vault", "RAMPARTS_VAULT_URL": "https://v.example"},
            "Vault login: set RAMPARTS_VAULT_TOKEN, or",
        ),
        (
            {
                "RAMPARTS_KMS_BACKEND": "vault",
                "RAMPARTS_VAULT_URL": "https://v.example",
                "RAMPARTS_VAULT_TOKEN": VAULT_TOKEN,
                "RAMPARTS_VAULT_ROLE_ID": "ramparts",
                "RAMPARTS_VAULT_SECRET_ID": VAULT_TOKEN,
            },
            "Vault login: set RAMPARTS_VAULT_TOKEN, or",
        ),
        (
            {"RAMPARTS_KMS_PASSPHRASE": STRONG_KEY, "RAMPARTS_KMS_KEY_FILE": "/etc/kek"},
            "RAMPARTS_KMS_PASSPHRASE and RAMPARTS_KMS_KEY_FILE: set one, not both",
        ),
    ],
)
def test_kms_settings_must_be_complete(
    env: pytest.MonkeyPatch, values: dict[str, str], message: str
) -> None:
    for name, value in values.items():
        env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert VAULT_TOKEN not in str(caught.value)
    assert STRONG_KEY not in str(caught.value)


def test_secrets_are_masked(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        env,
        {
            **CLEAN_PROD,
            "RAMPARTS_VAULT_TOKEN": VAULT_TOKEN,
            "RAMPARTS_KMS_PASSPHRASE": STRONG_DB_PASSWORD,
        },
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert STRONG_KEY not in shown
    assert STRONG_DB_PASSWORD not in shown
    assert VAULT_TOKEN not in shown


def test_settings_are_frozen(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(env, {})
    with pytest.raises(ValueError, match="frozen"):
        settings.debug = True
