"""The drills' shared pieces that decide what a report may say: a policy counts as confining
only when it is exactly the tenant condition, child output enters evidence redacted, and a
session knows when its token is about to expire."""

from __future__ import annotations

import base64
import json
import time

import pytest

from ramparts.tabletop.conformance.catalog import Policy
from ramparts.tabletop.evidence import redacted, without_credentials
from ramparts.tabletop.target import _expires_at

TENANT = "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"


def policy(using: str | None, check: str | None = None) -> Policy:
    return Policy("p", "ALL", ("public",), using, check)


def test_only_the_exact_tenant_condition_confines() -> None:
    assert policy(TENANT, TENANT).confined()
    assert policy(TENANT.replace("(tenant_id =", "(id =")).confined()  # the tenant registry
    for loose in (
        f"({TENANT} OR true)",
        f"{TENANT} OR true",
        "(tenant_id IS NOT NULL)",
        "(current_setting('app.tenant_id'::text, true) IS NOT NULL)",
        "true",
    ):
        assert not policy(loose).confined(), loose
        assert not policy(TENANT, loose).confined(), loose
    assert not policy(None, None).confined()


@pytest.mark.parametrize(
    ("raw", "kept", "gone"),
    [
        ("connect postgresql://owner:hunter2@db.internal:5432/app", "db.internal", "hunter2"),
        ("mail alice@example.com failed", "failed", "alice@example.com"),
        (
            "key sk_test_4eC39HqLyjWDarjtT1zdp7dc refused",  # pragma: allowlist secret
            "refused",
            "sk_test_4eC39HqLy",
        ),
    ],
)
def test_child_output_enters_evidence_redacted(raw: str, kept: str, gone: str) -> None:
    cleaned = redacted(f"first line\n{raw}", last_line=True)
    assert kept in cleaned
    assert gone not in cleaned
    assert "first line" not in cleaned


def test_a_url_loses_its_credentials() -> None:
    assert without_credentials("http://u:p@127.0.0.1:8000/x") == "http://127.0.0.1:8000/x"
    assert without_credentials("http://127.0.0.1:8000") == "http://127.0.0.1:8000"


def test_a_tokens_expiry_is_read_and_an_unreadable_one_never_expires() -> None:
    exp = int(time.time()) + 42
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=").decode()
    assert _expires_at(f"h.{payload}.s") == exp
    assert _expires_at("not a jwt") == float("inf")
