"""The verifier server: nonces, DCAP quote verification, measurement policy, sealed key release."""
