"""Webhook secrets in the KMS: rotation keeps the previous one for the overlap window only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from ramparts.crypto.kms import KmsError
from ramparts.payments.webhook_secrets import (
    MAX_OVERLAP_SECONDS,
    SECRET_NAME,
    WebhookSecrets,
)
from tests.live import temporary_kms

NOW = 1_800_000_000.0
FIRST = SecretStr("whsec_" + "1" * 32)
SECOND = SecretStr("whsec_" + "2" * 32)
THIRD = SecretStr("whsec_" + "3" * 32)


@pytest.fixture
def store(tmp_path: Path) -> WebhookSecrets:
    return WebhookSecrets(temporary_kms(tmp_path), refresh_seconds=0)


def keys(*secrets: SecretStr) -> list[bytes]:
    return [s.get_secret_value().encode() for s in secrets]


def test_none_is_active_until_one_is_stored(store: WebhookSecrets) -> None:
    assert store.active(NOW) == []
    assert store.current() is None


def test_the_previous_secret_stays_valid_for_the_overlap_only(store: WebhookSecrets) -> None:
    store.rotate(FIRST, now=NOW)
    store.rotate(SECOND, overlap_seconds=600, now=NOW)
    assert store.active(NOW) == keys(SECOND, FIRST)  # newest first
    assert store.active(NOW + 599) == keys(SECOND, FIRST)
    assert store.active(NOW + 600) == keys(SECOND)
    assert store.current() == SECOND


def test_no_overlap_drops_the_previous_secret_at_once(store: WebhookSecrets) -> None:
    store.rotate(FIRST, now=NOW)
    _, listed = store.rotate(SECOND, overlap_seconds=0, now=NOW)
    assert [s.value for s in listed] == [SECOND]
    assert store.active(NOW) == keys(SECOND)


def test_a_new_rotation_never_lengthens_an_earlier_window(store: WebhookSecrets) -> None:
    store.rotate(FIRST, now=NOW)
    store.rotate(SECOND, overlap_seconds=100, now=NOW)
    store.rotate(THIRD, overlap_seconds=1000, now=NOW + 50)
    assert store.active(NOW + 60) == keys(THIRD, SECOND, FIRST)
    assert store.active(NOW + 100) == keys(THIRD, SECOND)  # FIRST kept its own expiry
    assert store.active(NOW + 1050) == keys(THIRD)
    # Expired ones are dropped from the KMS at the next rotation.
    _, listed = store.rotate(overlap_seconds=10, now=NOW + 2000)
    assert [s.value for s in listed][1:] == [THIRD]


def test_a_rotation_without_a_secret_makes_a_strong_one(store: WebhookSecrets) -> None:
    made, _ = store.rotate(now=NOW)
    value = made.get_secret_value()
    assert value.startswith("whsec_")
    assert len(value) >= 6 + 40
    other, _ = store.rotate(now=NOW)
    assert other != made


@pytest.mark.parametrize(
    "bad", ["", "secret", "whsec_short", "whsec_" + "a" * 30 + " ", "whsec_" + "é" * 30]
)
def test_a_malformed_secret_is_refused(store: WebhookSecrets, bad: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        store.rotate(SecretStr(bad), now=NOW)
    assert store.current() is None


def test_rotating_to_a_stored_secret_is_refused(store: WebhookSecrets) -> None:
    store.rotate(FIRST, now=NOW)
    store.rotate(SECOND, now=NOW)
    with pytest.raises(ValueError, match="already stored"):
        store.rotate(FIRST, now=NOW)


@pytest.mark.parametrize("overlap", [-1, MAX_OVERLAP_SECONDS + 1])
def test_an_overlap_out_of_bounds_is_refused(store: WebhookSecrets, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap"):
        store.rotate(FIRST, overlap_seconds=overlap, now=NOW)


def test_ensure_keeps_the_first_secret(store: WebhookSecrets) -> None:
    made = store.ensure()
    assert store.ensure() == made
    assert store.active() == keys(made)


def test_a_server_sees_a_rotation_within_its_refresh(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    server = WebhookSecrets(kms, refresh_seconds=3600)
    cli = WebhookSecrets(kms)
    cli.rotate(FIRST, now=NOW)
    assert server.active(NOW) == keys(FIRST)
    cli.rotate(SECOND, overlap_seconds=10, now=NOW)
    # Cached: the server still has the list it read, but expiry is checked on every read.
    assert server.active(NOW) == keys(FIRST)
    assert WebhookSecrets(kms, refresh_seconds=0).active(NOW + 10) == keys(SECOND)


def test_a_corrupt_document_is_refused_without_its_values(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    kms.write_secret(SECRET_NAME, SecretStr(json.dumps([{"secret": "whsec_leak"}])))
    with pytest.raises(KmsError) as refused:
        WebhookSecrets(kms).active(NOW)
    assert "leak" not in str(refused.value)
