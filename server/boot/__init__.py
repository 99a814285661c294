"""The boot feature: boot nonces, the boot attestation, its store and the key release."""
