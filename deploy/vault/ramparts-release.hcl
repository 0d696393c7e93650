# The release signer's policy (`ramparts keys rotate --release`, `ramparts keys public-key`,
# `ramparts release sign`), for the AppRole that CI's release job alone logs in with. The
# release key lives on a Transit mount of its own, `transit-release`, which the application's
# policy (deploy/vault/ramparts.hcl) does not reach: a compromised API can neither sign a
# release nor rotate or delete the release key. Set up once:
#   bao secrets enable -path=transit-release transit
#   bao policy write ramparts-release deploy/vault/ramparts-release.hcl
# and run the release job with RAMPARTS_VAULT_TRANSIT_MOUNT=transit-release.
#
# The key is the Transit key `ramparts-release`, type ed25519: it signs inside Vault and only its
# public half is ever read out. No export, no backup, no deletion, no other key.

# Create it (type ed25519) and rotate it (Transit calls both "update"), read its public keys.
path "transit-release/keys/ramparts-release" {
  capabilities = ["read", "update"]
}
path "transit-release/keys/ramparts-release/rotate" {
  capabilities = ["update"]
}

# Sign release manifests with it.
path "transit-release/sign/ramparts-release" {
  capabilities = ["update"]
}
