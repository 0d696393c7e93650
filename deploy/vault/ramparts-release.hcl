# The release signer's policy (`ramparts keys rotate --release`, `ramparts keys public-key`,
# `ramparts release sign`), for the AppRole that CI's release job alone logs in with:
#   bao policy write ramparts-release deploy/vault/ramparts-release.hcl
# The key is the Transit key `ramparts-release`, type ed25519: it signs inside Vault and only its
# public half is ever read out. No export, no backup, no deletion, no other key.

# Create it (type ed25519), read its public keys and newest version, rotate it.
path "transit/keys/ramparts-release" {
  capabilities = ["create", "read", "update"]
}
path "transit/keys/ramparts-release/rotate" {
  capabilities = ["update"]
}

# Sign release manifests with it.
path "transit/sign/ramparts-release" {
  capabilities = ["update"]
}
