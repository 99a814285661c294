"""tdx-boot-attest agent: attestation-gated LUKS unlock from inside a TDX VM."""

__version__ = "0.1.0"
