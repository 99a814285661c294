"""tdxsim: a simulated Intel TDX platform for development, testing and CI.

It provides a simulated Intel PKI and DCAP collateral, TDX quotes that pass the same DCAP
verification as real ones (against the simulated root), measured-boot helpers, a
configfs-tsm device and a PCS endpoint. Start with ``tdxsim.state.SimState``.
"""
