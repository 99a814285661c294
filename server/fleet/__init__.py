"""The fleet side: miners, the server registry, runtime attestation and its status."""
