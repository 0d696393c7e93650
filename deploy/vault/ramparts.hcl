# The least-privilege policy for Ramparts' KMS in Vault or OpenBao (`RAMPARTS_KMS_BACKEND=vault`).
# Attach it to the AppRole the API, the workers and the operator's CLI log in with:
#   bao policy write ramparts deploy/vault/ramparts.hcl
# The paths assume the default settings: RAMPARTS_VAULT_PREFIX=ramparts,
# RAMPARTS_VAULT_TRANSIT_MOUNT=transit, RAMPARTS_VAULT_KV_MOUNT=secret. Change them together.

# Transit keys `ramparts-<key>` (`system`, `tenant-<id>`): created on first use and rotated
# (keys/<name>, keys/<name>/rotate: Transit calls both "update"), read for their newest version,
# marked deletable (keys/<name>/config) and deleted when a tenant is crypto-shredded.
# No export, no backup, no listing, no key of another prefix.
path "transit/keys/ramparts-*" {
  capabilities = ["read", "update", "delete"]
}

# Only tenant keys are ever destroyed. The backup key and the system key keep every version:
# their config (deletion_allowed, min_decryption_version, which trimming needs) is denied, so
# a compromised API cannot make every backup, or the audit's sealed keys, unreadable.
path "transit/keys/ramparts-backup/config" {
  capabilities = ["deny"]
}
path "transit/keys/ramparts-system/config" {
  capabilities = ["deny"]
}

# Wrapping and unwrapping data keys; the wrap context is Transit's associated data.
path "transit/encrypt/ramparts-*" {
  capabilities = ["update"]
}
path "transit/decrypt/ramparts-*" {
  capabilities = ["update"]
}

# Secrets (PSP and model API keys, webhook secrets, the server key) under secret/ramparts/,
# KV v2's data path: written (create-only writes use check-and-set) and read. No list, no
# metadata, no destroy: removing a secret is an operator's act, not the application's.
path "secret/data/ramparts/*" {
  capabilities = ["create", "read", "update"]
}
