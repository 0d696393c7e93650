"""Releases: the wheel and its CycloneDX SBOM, a manifest of their digests signed by an Ed25519
key kept in the KMS, and the check anyone can run with the published public key."""
