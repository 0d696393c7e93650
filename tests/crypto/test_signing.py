"""KMS signing keys: one contract for the local keystore and a real OpenBao (Vault) server; the
private half never leaves the KMS, the public half alone verifies."""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import RELEASE_KEY, Kms, KmsError
from ramparts.crypto.signing import load_public_key_pem, signature_verifies
from ramparts.crypto.vault import VaultDeniedError, VaultKms, approle_login, vault_client
from ramparts.release.manifest import sign_release, verify_release
from tests.crypto.bao import Bao
from tests.live import temporary_kms

RELEASE_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "ramparts-release.hcl"
RELEASE_MOUNT = "transit-release"  # the release key's own Transit mount, as the policy says


@pytest.fixture(params=["local", "vault"])
def kms(request: pytest.FixtureRequest, tmp_path: Path) -> Kms:
    if request.param == "local":
        return temporary_kms(tmp_path)
    bao: Bao = request.getfixturevalue("bao")
    return VaultKms(bao.admin())


def fresh_key() -> str:
    """A signing key name of its own: the OpenBao server lives for the whole session."""
    return f"sign-{secrets.token_hex(4)}"


def test_a_signing_key_signs_and_its_public_half_alone_verifies(kms: Kms) -> None:
    key, message = fresh_key(), b"manifest bytes"
    assert kms.public_key(key) is None
    with pytest.raises(KmsError, match="does not exist"):
        kms.sign(key, message)

    assert kms.rotate_signing_key(key) == f"{key}:v1"
    first = kms.public_key(key)
    assert first is not None
    assert first.ref == f"{key}:v1"
    assert len(first.raw) == 32
    signature = kms.sign(key, message)
    assert signature.ref == f"{key}:v1"
    public = load_public_key_pem(first.pem())
    assert signature_verifies(public, signature.value, message)
    assert not signature_verifies(public, signature.value, message + b" ")

    assert kms.rotate_signing_key(key) == f"{key}:v2"
    second = kms.public_key(key)
    assert second is not None
    assert second.ref == f"{key}:v2"
    assert second.fingerprint != first.fingerprint
    newer = kms.sign(key, message)
    assert newer.ref == f"{key}:v2"
    assert signature_verifies(load_public_key_pem(second.pem()), newer.value, message)
    assert not signature_verifies(public, newer.value, message)  # another key now


def test_signing_and_encryption_keys_never_share_a_name(kms: Kms) -> None:
    encryption, signing = fresh_key(), fresh_key()
    kms.wrap(encryption, b"data key", context="c")
    kms.rotate_signing_key(signing)
    with pytest.raises(KmsError, match="encryption key"):
        kms.rotate_signing_key(encryption)
    with pytest.raises(KmsError, match="encryption key"):
        kms.sign(encryption, b"m")
    with pytest.raises(KmsError):
        kms.wrap(signing, b"data key", context="c")


def test_the_encryption_key_calls_neither_rotate_nor_destroy_a_signing_key(kms: Kms) -> None:
    """Transit rotates and deletes any key type through the same endpoints: asked through the
    encryption-key calls, a signing key is refused by both backends, and stays as it was."""
    signing = fresh_key()
    kms.rotate_signing_key(signing)
    public = kms.public_key(signing)
    for call in (kms.rotate, kms.current, kms.destroy):
        with pytest.raises(KmsError, match=f"KMS key {signing} is a signing key"):
            call(signing)
    assert kms.public_key(signing) == public
    assert kms.sign(signing, b"m").ref == f"{signing}:v1"


def test_the_local_keystore_keeps_signing_keys_sealed_and_shared(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    kms.rotate_signing_key(RELEASE_KEY)
    public = kms.public_key(RELEASE_KEY)
    assert public is not None
    # Another process (another LocalKms on the same file) signs with the very same key.
    other = temporary_kms(tmp_path)
    signature = other.sign(RELEASE_KEY, b"m")
    assert signature_verifies(Ed25519PublicKey.from_public_bytes(public.raw), signature.value, b"m")
    # No 32-byte run of anything stored is the private key: sealed, not stored in the clear.
    stored = json.loads((tmp_path / "keystore.json").read_text())
    assert set(stored["signing_keys"][RELEASE_KEY]) == {"1"}
    blobs = [
        base64.b64decode(text)
        for text in re.findall(r'"([A-Za-z0-9+/=]{40,})"', json.dumps(stored))
    ]
    for blob in blobs:
        for start in range(len(blob) - 31):
            candidate = blob[start : start + 32]
            derived = _public_of_seed(candidate)
            assert derived != public.raw, "the private key is stored in the clear"


def _public_of_seed(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def release_signer(bao: Bao) -> VaultKms:
    """The KMS as CI's release job reaches it: its own Transit mount, and an AppRole holding
    only deploy/vault/ramparts-release.hcl."""
    admin = bao.admin()
    if f"{RELEASE_MOUNT}/" not in admin.sys.list_mounted_secrets_engines()["data"]:
        admin.sys.enable_secrets_engine(backend_type="transit", path=RELEASE_MOUNT)
    admin.sys.create_or_update_policy(name="ramparts-release", policy=RELEASE_POLICY.read_text())
    admin.auth.approle.create_or_update_approle(
        role_name="ramparts-release", token_policies=["ramparts-release"], token_ttl="20m"
    )
    role_id = admin.auth.approle.read_role_id(role_name="ramparts-release")["data"]["role_id"]
    secret_id = SecretStr(
        admin.auth.approle.generate_secret_id(role_name="ramparts-release")["data"]["secret_id"]
    )
    client = vault_client(bao.url, role_id=role_id, secret_id=secret_id)
    return VaultKms(
        client,
        transit_mount=RELEASE_MOUNT,
        relogin=lambda: approle_login(client, role_id, secret_id),
    )


def test_a_vault_transit_key_signs_a_release_that_verifies_without_vault(
    bao: Bao, tmp_path: Path
) -> None:
    signer = release_signer(bao)
    signer.rotate_signing_key(RELEASE_KEY)
    public = signer.public_key(RELEASE_KEY)
    assert public is not None
    release = tmp_path / "dist"
    release.mkdir()
    (release / "ramparts-0.1.0-py3-none-any.whl").write_bytes(secrets.token_bytes(4096))
    (release / "ramparts-0.1.0.cdx.json").write_text('{"bomFormat": "CycloneDX"}\n')

    manifest = sign_release(release, signer)

    assert manifest["signing_key"]["ref"] == public.ref
    assert verify_release(release, public.pem())["version"] == "0.1.0"
    # Vault holds the private half: Transit's key is of type ed25519 and never exportable.
    described = bao.admin().secrets.transit.read_key(
        name="ramparts-release", mount_point=RELEASE_MOUNT
    )["data"]
    assert described["type"] == "ed25519"
    assert described["exportable"] is False
    # The application's own AppRole (deploy/vault/ramparts.hcl) can neither sign releases nor
    # touch the release key, even when pointed at the release key's mount.
    application = open_kms(bao.settings().model_copy(update={"vault_transit_mount": RELEASE_MOUNT}))
    with pytest.raises(VaultDeniedError):
        application.sign(RELEASE_KEY, b"a forged manifest")
    with pytest.raises(VaultDeniedError):
        application.rotate_signing_key(RELEASE_KEY)
    with pytest.raises(VaultDeniedError):
        application.destroy(RELEASE_KEY)
    assert signer.public_key(RELEASE_KEY) == public
    # Nor may the release signer read or wrap with any other key.
    with pytest.raises(VaultDeniedError):
        signer.wrap("system", b"data key", context="c")
