"""KMS backends (local keystore, Vault), envelope and field-level encryption, key rotation and
crypto-shredding (controls ID-4, AZ-5). Lands with the secrets and encryption issue."""
